"""The imperative shell around the job state machine: database, gateway, timers.

Every input for a job (charger reports, answers, timer ticks, operator actions) goes through
one queue and one worker, so a job's transitions are serial and each is written to the
database (row + history entry) before any side effect it asks for: the outbox rule. A job
marked ``sending`` is therefore re-sent after a crash, never lost; every other phase keeps
its stored deadline, so timers carry on across restarts.

OCPP 2.0.1 chargers (``chargers.protocol``, as last connected) get the same jobs: the
image's signature decides signed (L01) or plain (L02) once, with no 1.6-style method
fallback, and the job id is the ``requestId`` of both variants.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from evota import metrics
from evota.audit.log import SYSTEM, AuditLog
from evota.clock import Clock
from evota.control import commands
from evota.firmware import delivery, tokens
from evota.fleet import vendors
from evota.periodic import raise_if_cancelled
from evota.rollout import job as jm
from evota.rollout import vendor_fit
from evota.store.models import Charger, Firmware, JobEvent
from evota.store.models import Job as JobRow

log = structlog.get_logger("evota.jobs")

# A download token is a path segment of 80+ URL-safe characters (the shortest is 82; the
# image's SHA-256 before it is 64 hex digits and stays readable).
_TOKEN_IN_URL = re.compile(r"(?<=/)[A-Za-z0-9_-]{80,}(?=/|$)")
# An FTP location's password is the download token: ftp://<charger>:<token>@host/...
_PASSWORD_IN_URL = re.compile(r"^([a-z]+://[^/@:]*):[^/@]*@")


def redacted(location: str) -> str:
    """A download location without its token (in the path or as the FTP password), as it is
    recorded in the job's history."""
    return _PASSWORD_IN_URL.sub(r"\1:<token>@", _TOKEN_IN_URL.sub("<token>", location))


V201 = "ocpp2.0.1"


class JobConflict(Exception):
    """The charger already has an update in progress."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"charger already has job {job_id} in progress")
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Image:
    """What a job sends: the firmware's identity and signature material."""

    firmware_id: str
    sha256: str
    version: str
    signature: str | None
    signing_certificate: str | None


Send = Callable[[str, commands.Command], Any]  # Gateway.send: awaitable CommandResult
Ready = Callable[[str], bool]  # is the charger connected and accepted?


async def record_bytes_served(engine: AsyncEngine, served: dict[str, int]) -> None:
    """Add what the download servers sent per job id to each job's ``bytes_served``.

    An increment, so any node may record what its own download server sent (in a cluster
    every node serves downloads; the job runner runs only on the leader).
    """
    if not served:
        return
    metrics.FIRMWARE_BYTES.inc(sum(served.values()))
    async with engine.begin() as conn:
        for job_id, count in served.items():
            if job_id.isdigit():
                await conn.execute(
                    update(JobRow)
                    .where(JobRow.id == int(job_id))
                    .values(bytes_served=JobRow.bytes_served + count)
                )


class JobRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        send: Send,
        ready: Ready,
        timeouts: jm.Timeouts,
        token_keys: list[bytes],
        token_ttl: int,
        base_url: Callable[[], str],
        location: Callable[[str, str, str], str] | None = None,
        take_bytes: Callable[[], dict[str, int]] = dict,
        tick_interval: float = 1.0,
        audit: AuditLog | None = None,
        profile_for: Callable[[str], vendors.VendorProfile] | None = None,
    ) -> None:
        self._engine = engine
        # The charger's effective vendor profile (evota.fleet.vendor_store.for_charger).
        self._profile_for = profile_for or (lambda _charger_id: vendors.DEFAULT)
        self._clock = clock
        self._send_command = send
        self._ready = ready
        self.timeouts = timeouts
        self._token_keys = token_keys
        self._token_ttl = token_ttl
        self._base_url = base_url
        # (charger id, sha256, token) -> UpdateFirmware location; None: the HTTP download
        # server. Injected so the rollout core stays protocol-neutral (FTP: firmware.ftp_delivery).
        self._location = location
        self._take_bytes = take_bytes
        self._tick_interval = tick_interval
        self._audit = audit
        self.active: dict[str, jm.Job] = {}  # charger id -> its one unfinished job
        self._images: dict[int, Image] = {}  # job id -> image
        # (charger, input, name, the job it is about: None for what the charger says, which is
        # about whatever job is active; a CALL's answer names the job that sent it)
        self._inbox: asyncio.Queue[tuple[str, jm.Input, str, int | None]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one transition at a time, worker or API
        # Told the id of every job written, after the commit (the campaign runner's memory of
        # its jobs, evota.rollout.campaign_jobs): every job transition goes through _persist.
        self.change_listeners: list[Callable[[int], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load unfinished jobs and reconcile them with what chargers last reported."""
        now = self._clock.now()
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        *JobRow.__table__.c,
                        Firmware.sha256,
                        Firmware.version,
                        Firmware.signature,
                        Firmware.signing_certificate,
                        Charger.firmware_version.label("reported"),
                        Charger.protocol.label("protocol"),
                    )
                    .join(Firmware, Firmware.id == JobRow.firmware_id)
                    .join(Charger, Charger.id == JobRow.charger_id, isouter=True)
                    .where(JobRow.state.not_in([s.value for s in jm.TERMINAL]))
                )
            ).all()
        for row in rows:
            job = _job_from_row(row)
            if self._profile_for(job.charger_id).signed_updates is False:
                job = replace(job, signed_available=False)
            self.active[job.charger_id] = job
            self._images[job.id] = Image(
                firmware_id=row.firmware_id,
                sha256=row.sha256,
                version=row.version,
                signature=row.signature,
                signing_certificate=row.signing_certificate,
            )
            s = jm.reconcile(job, row.reported, now, self._timeouts(job.charger_id))
            if s.changed:
                await self._persist(s.job, "reconciled", {"reported_version": row.reported})
        self._worker = asyncio.create_task(self._work(), name="jobs-worker")
        self._ticker = asyncio.create_task(self._tick(), name="jobs-ticker")
        if rows:
            log.info("jobs resumed", count=len(rows))

    async def stop(self) -> None:
        for task in (self._ticker, self._worker, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._ticker, self._worker, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._flush_bytes()

    # -- commands from the API ----------------------------------------------------------------
    async def create(
        self,
        *,
        charger_id: str,
        firmware: Any,
        previous_version: str | None,
        learned_method: str | None,
        retrieve_at: datetime | None = None,
        allow_downgrade: bool = False,
        created_by: str | None = None,
        kind: str = "update",
        campaign_id: str | None = None,
    ) -> jm.Job:
        # Under the transition lock: the job is in ``active`` before its "created" row is
        # written, and a dispatch, a send and the job's whole run could otherwise complete
        # while that write waited (SQLite's writer), after which it wrote "queued" over the
        # finished job and put it back in ``active`` (a second UpdateFirmware, then timed_out).
        async with self._lock:
            current = self.active.get(charger_id)
            if current is not None:
                raise JobConflict(current.id)
            now = self._clock.now()
            image = _image(firmware)
            fallback = await self._protocol_of(charger_id) != V201
            method, signed_available = vendor_fit.method_for(
                self._profile_for(charger_id),
                signed_image=image.signature is not None,
                learned_plain=learned_method == jm.Method.PLAIN.value,
                fallback=fallback,
            )
            async with self._engine.begin() as conn:
                job_id = (
                    await conn.execute(
                        insert(JobRow)
                        .values(
                            charger_id=charger_id,
                            firmware_id=image.firmware_id,
                            campaign_id=campaign_id,
                            kind=kind,
                            state=jm.JobState.QUEUED.value,
                            target_version=image.version,
                            previous_version=previous_version,
                            method=method.value if method else None,
                            attempts=0,
                            retrieve_at=retrieve_at,
                            allow_downgrade=allow_downgrade,
                            bytes_served=0,
                            created_by=created_by,
                            created_at=now,
                            updated_at=now,
                        )
                        .returning(JobRow.id)
                    )
                ).scalar_one()
            job = jm.Job(
                id=int(job_id),
                charger_id=charger_id,
                target_version=image.version,
                previous_version=previous_version,
                method=method,
                retrieve_at=retrieve_at,
                signed_available=signed_available,
                fallback=fallback,
            )
            self._images[job.id] = image
            self.active[charger_id] = job
            s = jm.step(job, jm.Created(), now, self._timeouts(charger_id))
            await self._persist(
                s.job, "created", {"by": created_by, "firmware_id": image.firmware_id}
            )
        if self._ready(charger_id):
            self.notify(charger_id, jm.Dispatch(), "dispatch")
        return s.job

    def _timeouts(self, charger_id: str) -> jm.Timeouts:
        """The configured timeouts, raised to fit the charger's vendor profile."""
        return vendor_fit.fit_timeouts(self.timeouts, self._profile_for(charger_id))

    async def _protocol_of(self, charger_id: str) -> str | None:
        async with self._engine.connect() as conn:
            return (
                await conn.execute(select(Charger.protocol).where(Charger.id == charger_id))
            ).scalar()

    async def cancel(self, job_id: int, reason: str) -> jm.Step | None:
        """Cancel a job that has not reached the charger; None if it is not active."""
        async with self._lock:
            job = next((j for j in self.active.values() if j.id == job_id), None)
            if job is None:
                return None
            s = jm.step(job, jm.Cancel(reason), self._clock.now(), self._timeouts(job.charger_id))
            if s.changed:
                await self._persist(s.job, "cancel", {"reason": reason})
            return s

    async def firmware_revoked(self, firmware_id: str) -> list[int]:
        """Cancel the revoked image's jobs that have not reached a charger yet."""
        cancelled = []
        for job in list(self.active.values()):
            image = self._images.get(job.id)
            if image is not None and image.firmware_id == firmware_id:
                s = await self.cancel(job.id, "firmware revoked")
                if s is not None and s.changed:
                    cancelled.append(job.id)
        return cancelled

    # -- charger reports (called synchronously from the fleet service) ------------------------
    def notify(
        self, charger_id: str, event: jm.Input, name: str, job_id: int | None = None
    ) -> None:
        if charger_id in self.active:
            self._inbox.put_nowait((charger_id, event, name, job_id))

    def booted(
        self, charger_id: str, firmware_version: str | None, reason: str | None = None
    ) -> None:
        self.notify(charger_id, jm.Booted(firmware_version, reason), "boot")

    def ready(self, charger_id: str) -> None:
        self.notify(charger_id, jm.Dispatch(), "dispatch")

    def firmware_status(self, charger_id: str, status: str, request_id: int | None) -> None:
        self.notify(charger_id, jm.StatusReported(status, request_id), "firmware_status")

    def faulted(self, charger_id: str, connector_id: int) -> None:
        self.notify(charger_id, jm.Faulted(connector_id), "faulted")

    def disconnected(self, charger_id: str) -> None:
        self.notify(charger_id, jm.Disconnected(), "disconnected")

    # -- the worker ---------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            charger_id, event, name, job_id = await self._inbox.get()
            try:
                async with self._lock:
                    # Read under the lock: a job that ended while this input waited (a
                    # cancel from a campaign's abort, say) must not come back from a stale
                    # copy, and an answer to one job's CALL is not another job's.
                    job = self.active.get(charger_id)
                    if job is None or (job_id is not None and job.id != job_id):
                        continue
                    await self._apply(job, event, name)
            except Exception:  # one bad transition must not stop every other job
                raise_if_cancelled()
                log.exception("job transition failed", charger_id=charger_id, input=name)

    async def _apply(self, job: jm.Job, event: jm.Input, name: str) -> None:
        s = jm.step(job, event, self._clock.now(), self._timeouts(job.charger_id))
        detail = _describe(event)
        if s.changed:
            await self._persist(s.job, name, detail)
        elif isinstance(event, jm.StatusReported | jm.Booted | jm.Answered | jm.SendFailed):
            # What the charger said is history even when it changes nothing.
            await self._record(s.job, name, {**detail, "note": s.note})
        if s.send:
            task = asyncio.create_task(self._send(s.job), name=f"job-{job.id}-send")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, job: jm.Job) -> None:
        image = self._images[job.id]
        now = self._clock.now()
        grant = tokens.DownloadGrant(
            job_id=str(job.id),
            charger_id=job.charger_id,
            firmware_sha256=image.sha256,
            expires_at=int(now.timestamp()) + self._token_ttl,
        )
        token = tokens.issue(grant, self._token_keys[0])
        if self._location is not None:
            location = self._location(job.charger_id, image.sha256, token)
        else:
            location = delivery.download_url(self._base_url(), job.charger_id, image.sha256, token)
        command: commands.Command
        if job.method is jm.Method.SIGNED:
            assert image.signature and image.signing_certificate
            command = commands.SignedUpdateFirmware(
                request_id=job.id,
                location=location,
                retrieve_at=now,
                signing_certificate=image.signing_certificate,
                signature=image.signature,
                retries=3,
                retry_interval=60,
            )
        else:
            command = commands.UpdateFirmware(
                location=location, retrieve_at=now, retries=3, retry_interval=60, request_id=job.id
            )
        await self._record(
            job,
            "sent",
            {
                "action": type(command).__name__,
                "location": redacted(location),
                "token_expires_at": grant.expires_at,
            },
        )
        event: jm.Input
        outcome = ""
        try:
            result = await self._send_command(job.charger_id, command)
            event = jm.Answered(result.status)
            outcome = result.status
            await self._remember_method(job, result.status)
        except commands.ChargerOffline:
            event = jm.SendFailed("offline")
        except commands.CommandTimeout:
            event = jm.SendFailed("timeout")
        except commands.CommandRejected as exc:
            event = jm.SendFailed("callerror", exc.code, exc.description)
            outcome = f"error:callerror:{exc.code}"
            if job.fallback and exc.code in ("NotSupported", "NotImplemented"):
                other = jm.Method.PLAIN if job.method is jm.Method.SIGNED else jm.Method.SIGNED
                await self._set_charger_method(job.charger_id, other.value)
        except commands.CommandError as exc:
            event = jm.SendFailed("callerror", None, exc.message)
        if self._audit is not None:  # every command sent to a charger is in the audit log
            if not outcome and isinstance(event, jm.SendFailed):
                outcome = f"error:{event.reason}"
            await self._audit.record(
                SYSTEM,
                f"command.{command.name.replace('_', '-')}",
                outcome or "error",
                target=str(job.id),
                chargers=[job.charger_id],
                detail={"job_id": job.id, "target_version": job.target_version},
            )
        self.notify(job.charger_id, event, "answer", job.id)

    async def _remember_method(self, job: jm.Job, status: str) -> None:
        """1.6 only: which variant a charger takes is learned from its answers."""
        if not job.fallback:
            return
        if status in ("Accepted", "AcceptedCanceled") and job.method is not None:
            await self._set_charger_method(job.charger_id, job.method.value)

    async def _set_charger_method(self, charger_id: str, method: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(Charger).where(Charger.id == charger_id).values(firmware_delivery=method)
            )

    # -- timers -------------------------------------------------------------------------------
    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            now = self._clock.now()
            for charger_id, job in list(self.active.items()):
                if job.deadline is not None and job.deadline <= now:
                    self.notify(charger_id, jm.Tick(), "timer")
                elif job.state in jm.WAITING and self._ready(charger_id):
                    self.notify(charger_id, jm.Dispatch(), "dispatch")
            try:
                await self._flush_bytes()
            except Exception:
                raise_if_cancelled()
                log.exception("could not record bytes served")

    async def _flush_bytes(self) -> None:
        await record_bytes_served(self._engine, self._take_bytes())

    # -- persistence --------------------------------------------------------------------------
    async def _persist(self, job: jm.Job, event: str, detail: dict[str, Any]) -> None:
        now = self._clock.now()
        values: dict[str, Any] = {
            "state": job.state.value,
            "failure": job.failure.value if job.failure else None,
            "detail": job.detail,
            "method": job.method.value if job.method else None,
            "attempts": job.attempts,
            "deadline": job.deadline,
            "updated_at": now,
        }
        if job.terminal:
            values["finished_at"] = now
        async with self._engine.begin() as conn:
            await conn.execute(update(JobRow).where(JobRow.id == job.id).values(**values))
            await conn.execute(
                insert(JobEvent).values(
                    job_id=job.id, at=now, event=event, state=job.state.value, detail=detail
                )
            )
        for listen in self.change_listeners:
            listen(job.id)
        if job.terminal:
            self.active.pop(job.charger_id, None)
            self._images.pop(job.id, None)
            failure = job.failure.value if job.failure else ""
            metrics.JOBS_FINISHED.labels(job.state.value, failure).inc()
            log.info(
                "job finished",
                job_id=job.id,
                charger_id=job.charger_id,
                state=job.state.value,
                failure=job.failure.value if job.failure else None,
                detail=job.detail,
            )
        else:
            self.active[job.charger_id] = job

    async def _record(self, job: jm.Job, event: str, detail: dict[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(JobEvent).values(
                    job_id=job.id,
                    at=self._clock.now(),
                    event=event,
                    state=job.state.value,
                    detail=detail,
                )
            )


def _describe(event: jm.Input) -> dict[str, Any]:
    match event:
        case jm.StatusReported(status, request_id):
            return {"status": status, "request_id": request_id}
        case jm.Booted(version, reason):
            return {"firmware_version": version, "reason": reason}
        case jm.Answered(status):
            return {"status": status}
        case jm.SendFailed(reason, code, description):
            return {"reason": reason, "code": code, "description": description}
        case jm.Faulted(connector_id):
            return {"connector_id": connector_id}
        case jm.Cancel(reason):
            return {"reason": reason}
    return {}


def _image(fw: Any) -> Image:
    return Image(
        firmware_id=fw.id,
        sha256=fw.sha256,
        version=fw.version,
        signature=fw.signature,
        signing_certificate=fw.signing_certificate,
    )


def _job_from_row(row: Any) -> jm.Job:
    return jm.Job(
        id=row.id,
        charger_id=row.charger_id,
        target_version=row.target_version,
        previous_version=row.previous_version,
        state=jm.JobState(row.state),
        failure=jm.Failure(row.failure) if row.failure else None,
        detail=row.detail,
        method=jm.Method(row.method) if row.method else None,
        attempts=row.attempts,
        retrieve_at=row.retrieve_at,
        deadline=row.deadline,
        signed_available=row.signature is not None,
        fallback=row.protocol != V201,
    )


def job_timeouts(settings: Any) -> jm.Timeouts:
    return jm.Timeouts(
        queue=settings.job_queue_timeout,
        answer=max(settings.call_timeout * 2, 10.0),
        download_start=settings.job_download_start_timeout,
        download=settings.job_download_timeout,
        install=settings.job_install_timeout,
        reboot=settings.job_reboot_timeout,
        verify=settings.job_verify_seconds,
    )
