"""The firmware update job state machine: pure, deterministic, clock injected.

A job is one charger's update. :func:`step` maps (job, input, now, timeouts) to the next job
and says what happened; the runner (the imperative shell) persists the result and performs
side effects. Nothing here does I/O, so every OCPP status sequence, reordering and timeout
can be checked exhaustively with hypothesis and virtual time.

Rules that matter to operators:

* **Success needs proof.** Only a BootNotification reporting the target version (after the
  update was accepted) moves a job to ``verifying``; the job succeeds once the charger has
  stayed healthy for the verify window (no Faulted status). ``Installed`` alone is not
  success: some chargers send it before rebooting.
* Coming back on the previous version is its own failure (``booted_previous_version``).
* Every waiting phase has a deadline; missing it fails the job as ``timed_out`` with the
  phase named in ``detail``.
* Terminal states absorb every later input.
* One machine for both protocols: OCPP 1.6 (plain UpdateFirmware, or the security
  extension's SignedUpdateFirmware) and OCPP 2.0.1 (UpdateFirmware, with or without a
  signature: use cases L01/L02) send the same FirmwareStatusNotification statuses. Only
  1.6 chargers tell by a NotSupported/NotImplemented CALLERROR which variant they take, so
  only their jobs (``fallback``) switch method on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting to be sent (charger offline, or not yet dispatched)
    SCHEDULED = "scheduled"  # waiting for retrieve_at before sending
    SENDING = "sending"  # intent recorded, the CALL is (or may be) on the wire
    ACCEPTED = "accepted"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    SIGNATURE_VERIFIED = "signature_verified"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"  # booted the target version; watching health
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Failure(enum.StrEnum):
    REJECTED = "rejected"
    DOWNLOAD_FAILED = "download_failed"
    INVALID_SIGNATURE = "invalid_signature"
    INSTALLATION_FAILED = "installation_failed"
    INSTALL_VERIFICATION_FAILED = "install_verification_failed"
    BOOTED_PREVIOUS_VERSION = "booted_previous_version"
    TIMED_OUT = "timed_out"
    UNHEALTHY = "unhealthy"


class Method(enum.StrEnum):
    SIGNED = "signed"  # 1.6 SignedUpdateFirmware / 2.0.1 UpdateFirmware with a signature
    PLAIN = "plain"  # 1.6 UpdateFirmware / 2.0.1 UpdateFirmware without one


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
WAITING = frozenset({JobState.QUEUED, JobState.SCHEDULED})
#: States in which the charger holds the update (a reboot or status report belongs to it).
ON_CHARGER = frozenset(
    {
        JobState.ACCEPTED,
        JobState.DOWNLOADING,
        JobState.DOWNLOADED,
        JobState.SIGNATURE_VERIFIED,
        JobState.INSTALLING,
        JobState.REBOOTING,
        JobState.VERIFYING,
    }
)
# Progress order: a status report never moves a job backwards (reports can arrive late).
_RANK = {
    JobState.ACCEPTED: 1,
    JobState.DOWNLOADING: 2,
    JobState.DOWNLOADED: 3,
    JobState.SIGNATURE_VERIFIED: 4,
    JobState.INSTALLING: 5,
    JobState.REBOOTING: 6,
    JobState.VERIFYING: 7,
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed per phase; each is the longest silence the phase tolerates."""

    queue: float = 24 * 3600  # queued for a charger that never comes online
    answer: float = 60  # sending: no answer to the CALL (restart in between included)
    download_start: float = 900  # accepted, the download never starts
    download: float = 1800  # downloading with no progress report
    install: float = 1800  # downloaded/verified/installing, no reboot yet
    reboot: float = 900  # rebooting, no BootNotification
    verify: float = 30  # booted the target: healthy this long means success
    max_attempts: int = 3  # sends that got no answer before giving up


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    charger_id: str
    target_version: str
    previous_version: str | None
    state: JobState = JobState.QUEUED
    failure: Failure | None = None
    detail: str | None = None
    method: Method | None = None
    attempts: int = 0
    retrieve_at: datetime | None = None
    deadline: datetime | None = None
    signed_available: bool = True  # the image has a signature (SignedUpdateFirmware possible)
    # 1.6: a NotSupported/NotImplemented answer switches signed <-> plain once. 2.0.1 has one
    # UpdateFirmware for both, so such an answer is a plain refusal there.
    fallback: bool = True

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    """The job was just created (decides queued vs. scheduled and the first deadline)."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """The charger is online and accepted: send if the job is due."""


@dataclass(frozen=True, slots=True)
class Answered:
    """The charger answered the update CALL (plain UpdateFirmware answers have no status)."""

    status: str = "Accepted"


@dataclass(frozen=True, slots=True)
class SendFailed:
    """No usable answer: ``reason`` is offline, timeout or callerror (with its ``code``)."""

    reason: str
    code: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class StatusReported:
    """A (Signed)FirmwareStatusNotification; ``request_id`` only on signed ones."""

    status: str
    request_id: int | None = None


@dataclass(frozen=True, slots=True)
class Booted:
    firmware_version: str | None
    reason: str | None = None  # 2.0.1 BootNotification reason (FirmwareUpdate, ...), for history


@dataclass(frozen=True, slots=True)
class Disconnected:
    pass


@dataclass(frozen=True, slots=True)
class Faulted:
    """The charger reported a Faulted connector (health signal after the update)."""

    connector_id: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: deadlines may have expired."""


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = "cancelled by operator"


Input = (
    Created
    | Dispatch
    | Answered
    | SendFailed
    | StatusReported
    | Booted
    | Disconnected
    | Faulted
    | Tick
    | Cancel
)


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one input. ``send`` asks the shell to send the update with ``job.method``
    (after persisting ``job``, whose state is then ``sending``); ``changed`` says whether
    anything worth recording happened; ``note`` explains ignored inputs."""

    job: Job
    changed: bool
    send: bool = False
    note: str | None = None


# -- the machine ----------------------------------------------------------------------------


def _at(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _to(job: Job, state: JobState, now: datetime, seconds: float | None, **kw: object) -> Job:
    deadline = None if seconds is None else _at(now, seconds)
    return replace(job, state=state, deadline=deadline, **kw)  # type: ignore[arg-type]


def _fail(job: Job, failure: Failure, detail: str) -> Job:
    return replace(job, state=JobState.FAILED, failure=failure, detail=detail, deadline=None)


def _unchanged(job: Job, note: str) -> Step:
    return Step(job, False, note=note)


def choose_method(job: Job) -> Method:
    """Signed when the image is signed and the charger has not shown it only takes plain."""
    if job.method is not None:
        return job.method
    return Method.SIGNED if job.signed_available else Method.PLAIN


def step(job: Job, event: Input, now: datetime, t: Timeouts) -> Step:
    """Apply one input. Never raises for any input in any state."""
    if job.terminal:
        return _unchanged(job, f"job is {job.state}")
    match event:
        case Cancel(reason):
            if job.state not in WAITING and job.state is not JobState.SENDING:
                # OCPP 1.6 cannot recall an update the charger holds; let it finish or fail.
                return _unchanged(job, f"cannot cancel: the charger already holds it ({job.state})")
            return Step(replace(job, state=JobState.CANCELLED, detail=reason, deadline=None), True)
        case Created():
            if job.state is not JobState.QUEUED or job.deadline is not None:
                return _unchanged(job, "already created")
            if job.retrieve_at is not None and job.retrieve_at > now:
                scheduled = replace(job, state=JobState.SCHEDULED, deadline=job.retrieve_at)
                return Step(scheduled, True)
            return Step(_to(job, JobState.QUEUED, now, t.queue), True)
        case Tick():
            return _tick(job, now, t)
        case Dispatch():
            if job.state is JobState.SCHEDULED and job.retrieve_at and job.retrieve_at > now:
                return _unchanged(job, "not due yet")
            if job.state not in WAITING:
                return _unchanged(job, f"already {job.state}")
            sending = _to(
                job,
                JobState.SENDING,
                now,
                t.answer,
                method=choose_method(job),
                attempts=job.attempts + 1,
            )
            return Step(sending, True, send=True)
        case Answered(status):
            return _answered(job, status, now, t)
        case SendFailed():
            return _send_failed(job, event, now, t)
        case StatusReported():
            return _status(job, event, now, t)
        case Booted(version, _):
            return _booted(job, version, now, t)
        case Disconnected():
            if job.state in (
                JobState.DOWNLOADED,
                JobState.SIGNATURE_VERIFIED,
                JobState.INSTALLING,
            ):
                return Step(_to(job, JobState.REBOOTING, now, t.reboot), True)
            return _unchanged(job, "disconnect does not change this phase")
        case Faulted(connector_id):
            if job.state is JobState.VERIFYING:
                detail = f"Faulted on connector {connector_id} after booting {job.target_version}"
                return Step(_fail(job, Failure.UNHEALTHY, detail), True)
            return _unchanged(job, "fault outside the verify window")
    return _unchanged(job, f"unknown input {event!r}")


def _tick(job: Job, now: datetime, t: Timeouts) -> Step:
    if job.deadline is None or now < job.deadline:
        return _unchanged(job, "no deadline passed")
    if job.state is JobState.SCHEDULED:
        return Step(_to(job, JobState.QUEUED, now, t.queue), True)
    if job.state is JobState.VERIFYING:
        detail = f"booted {job.target_version} and stayed healthy for {t.verify:g}s"
        return Step(replace(job, state=JobState.SUCCEEDED, detail=detail, deadline=None), True)
    if job.state is JobState.SENDING:
        # No answer (or evota restarted mid-CALL): send again; a new request supersedes the
        # old one on the charger, so a repeat is harmless.
        if job.attempts >= t.max_attempts:
            return Step(_fail(job, Failure.TIMED_OUT, "no answer to the update request"), True)
        return Step(_to(job, JobState.QUEUED, now, t.queue), True)
    phase = {
        JobState.QUEUED: "charger never came online",
        JobState.ACCEPTED: "download never started",
        JobState.DOWNLOADING: "download stalled",
        JobState.DOWNLOADED: "install never started",
        JobState.SIGNATURE_VERIFIED: "install never started",
        JobState.INSTALLING: "install took too long",
        JobState.REBOOTING: "reboot never came back",
    }[job.state]
    return Step(_fail(job, Failure.TIMED_OUT, phase), True)


_ANSWER_FAILURES = {
    # 2.0.1 (L01.FR.24) also answers Rejected when it cannot cancel an update in progress.
    "Rejected": (
        Failure.REJECTED,
        "charger rejected the update request (or could not cancel the update it is running)",
    ),
    "InvalidCertificate": (Failure.INVALID_SIGNATURE, "charger refused the signing certificate"),
    "RevokedCertificate": (Failure.INVALID_SIGNATURE, "signing certificate is revoked"),
}


_CANCELLED_OTHER = "accepted; the charger cancelled the update it had in progress"
_BUSY_WITH_EARLIER = (
    "charger answered Rejected to a repeated request: it is busy with an update, most likely "
    "this job's earlier request (sent before a restart or a lost answer); waiting for its reports"
)


def _answered(job: Job, status: str, now: datetime, t: Timeouts) -> Step:
    if job.state is not JobState.SENDING:
        if status == "AcceptedCanceled" and job.state not in TERMINAL:
            # Status reports overtook the answer (they already moved the job on): keep the
            # state, but say that the charger dropped the update it had in progress.
            return Step(replace(job, detail=_CANCELLED_OTHER), True)
        return _unchanged(job, f"answer while {job.state}")
    if status in ("Accepted", "AcceptedCanceled"):
        start = max(now, job.retrieve_at) if job.retrieve_at else now
        deadline = _at(start, t.download_start)
        detail = job.detail
        if status == "AcceptedCanceled":
            detail = _CANCELLED_OTHER
        accepted = replace(job, state=JobState.ACCEPTED, deadline=deadline, detail=detail)
        return Step(accepted, True)
    if status == "Rejected" and job.attempts > 1:
        # A charger busy with an update answers Rejected when it cannot cancel it (1.6 SWP,
        # 2.0.1 L01.FR.24). An earlier attempt of this job may have reached it (its answer was
        # lost, or evota restarted mid-CALL), so the running update is probably ours: wait for
        # its reports and its boot like an accepted one; the phase deadline decides otherwise.
        accepted = _answered(job, "Accepted", now, t).job
        return Step(replace(accepted, detail=_BUSY_WITH_EARLIER), True)
    failure, detail = _ANSWER_FAILURES.get(status, (Failure.REJECTED, f"charger answered {status}"))
    return Step(_fail(job, failure, detail), True)


def _send_failed(job: Job, event: SendFailed, now: datetime, t: Timeouts) -> Step:
    if job.state is not JobState.SENDING:
        return _unchanged(job, f"send failure while {job.state}")
    if event.reason == "offline":
        # Never reached the charger: wait for it, the attempt does not count.
        return Step(_to(job, JobState.QUEUED, now, t.queue, attempts=job.attempts - 1), True)
    if event.reason == "timeout":
        if job.attempts >= t.max_attempts:
            return Step(_fail(job, Failure.TIMED_OUT, "no answer to the update request"), True)
        return Step(_to(job, JobState.QUEUED, now, t.queue), True)
    if job.fallback and event.code in ("NotSupported", "NotImplemented"):
        # The charger told us which variant it takes: switch once and resend.
        if job.method is Method.SIGNED:
            return Step(
                _to(job, JobState.QUEUED, now, t.queue, method=Method.PLAIN, attempts=0), True
            )
        if job.method is Method.PLAIN and job.signed_available:
            return Step(
                _to(job, JobState.QUEUED, now, t.queue, method=Method.SIGNED, attempts=0), True
            )
    detail = f"charger answered CALLERROR {event.code}: {event.description}".strip(": ")
    return Step(_fail(job, Failure.REJECTED, detail), True)


# Status -> (new state, timeout attribute) for progress; failures separately.
_PROGRESS: dict[str, tuple[JobState, str]] = {
    "Downloading": (JobState.DOWNLOADING, "download"),
    "DownloadPaused": (JobState.DOWNLOADING, "download"),
    "Downloaded": (JobState.DOWNLOADED, "install"),
    "SignatureVerified": (JobState.SIGNATURE_VERIFIED, "install"),
    "Installing": (JobState.INSTALLING, "install"),
    "InstallRebooting": (JobState.REBOOTING, "reboot"),
}
_FAILURES: dict[str, tuple[Failure, str]] = {
    "DownloadFailed": (Failure.DOWNLOAD_FAILED, "charger reported DownloadFailed"),
    "InvalidSignature": (Failure.INVALID_SIGNATURE, "charger reported InvalidSignature"),
    "InstallationFailed": (Failure.INSTALLATION_FAILED, "charger reported InstallationFailed"),
    "InstallVerificationFailed": (
        Failure.INSTALL_VERIFICATION_FAILED,
        "charger reported InstallVerificationFailed",
    ),
}


def _status(job: Job, event: StatusReported, now: datetime, t: Timeouts) -> Step:
    if job.state is JobState.SENDING and (event.request_id is None or event.request_id == job.id):
        # The report overtook the CALLRESULT on its way to us: the charger took the job.
        job = _answered(job, "Accepted", now, t).job
    if job.state not in ON_CHARGER:
        return _unchanged(job, f"{event.status} while {job.state}")
    if event.request_id is not None and event.request_id != job.id:
        return _unchanged(job, f"{event.status} for request {event.request_id}, not this job")
    status = event.status
    if status in _FAILURES:
        if job.state is JobState.VERIFYING:
            return _unchanged(job, f"{status} after booting the target version")
        failure, detail = _FAILURES[status]
        return Step(_fail(job, failure, detail), True)
    if status in ("DownloadScheduled", "InstallScheduled"):
        # The charger waits (sessions running, or a requested time): give it the phase again.
        seconds = t.download_start if status == "DownloadScheduled" else t.install
        return Step(replace(job, deadline=_at(now, seconds)), True)
    if status == "Installed":
        if job.state in (JobState.REBOOTING, JobState.VERIFYING):
            return _unchanged(job, "Installed after the reboot")
        # Installed before rebooting: success still needs the boot with the target version.
        return Step(_to(job, JobState.REBOOTING, now, t.reboot), True)
    progress = _PROGRESS.get(status)
    if progress is None:
        return _unchanged(job, f"status {status} carries no progress")
    state, timeout = progress
    if _RANK[state] < _RANK[job.state]:
        return _unchanged(job, f"late {status} while {job.state}")
    return Step(_to(job, state, now, getattr(t, timeout)), True)


def _booted(job: Job, version: str | None, now: datetime, t: Timeouts) -> Step:
    if job.state not in ON_CHARGER or job.state is JobState.VERIFYING:
        return _unchanged(job, f"boot while {job.state}")
    if version == job.target_version:
        return Step(_to(job, JobState.VERIFYING, now, t.verify), True)
    installing = _RANK[job.state] >= _RANK[JobState.INSTALLING]
    if not installing:
        # A reboot before the install (power cut while downloading): the charger resumes or
        # reports; the phase deadline still applies.
        return _unchanged(job, f"rebooted on {version} before installing")
    if version == job.previous_version:
        return Step(
            _fail(
                job,
                Failure.BOOTED_PREVIOUS_VERSION,
                f"charger came back on the previous version {version}",
            ),
            True,
        )
    return Step(
        _fail(
            job,
            Failure.INSTALL_VERIFICATION_FAILED,
            f"charger booted {version}, expected {job.target_version}",
        ),
        True,
    )


def reconcile(job: Job, reported_version: str | None, now: datetime, t: Timeouts) -> Step:
    """After an evota restart, a job's view of the charger may be stale.

    A charger already reporting the target version (it booted while evota was down) moves
    straight to verifying; a job whose CALL may or may not have left is sent again (the
    charger treats a new request as superseding the old one). Other phases keep their
    stored deadlines, so timers carry on across the restart.
    """
    if job.terminal:
        return _unchanged(job, "terminal")
    if job.state in ON_CHARGER and reported_version == job.target_version:
        if job.state is JobState.VERIFYING:
            return _unchanged(job, "already verifying")
        return Step(_to(job, JobState.VERIFYING, now, t.verify), True)
    if job.state is JobState.SENDING:
        return Step(_to(job, JobState.QUEUED, now, t.queue), True)
    return _unchanged(job, "nothing to reconcile")
