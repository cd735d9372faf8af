"""Diagnostics and logs: GetDiagnostics / GetLog generate a text file of
``SimConfig.upload_bytes`` and upload it over HTTP to the given location (diagnostics:
multipart ``POST``; logs: ``PUT {location}/{filename}``), with retries, reporting
DiagnosticsStatusNotification / LogStatusNotification."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Awaitable, Callable

import httpx
import structlog

from evota.ocpp import rpc
from evota.sim.charger import USER_AGENT, Reply, SimulatedCharger
from evota.sim.control.state import Upload, security_only, state
from evota.sim.firmware import agent

log = structlog.get_logger("evota.sim")


def _file_name(charger: SimulatedCharger, kind: str) -> str:
    stamp = charger.clock.now().strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in charger.identity)
    return f"{kind}-{safe}-{stamp}.log"


def generate_file(charger: SimulatedCharger, kind: str, window: str) -> bytes:
    """A plausible text file of about ``SimConfig.upload_bytes`` bytes, ending in a newline."""
    c = charger
    lines = [
        f"# {kind} of {c.identity} ({c.spec.vendor} {c.spec.model}), firmware {c.firmware_version}",
        f"# window: {window}",
        f"# generated: {c._now()}",
        f"# connectors: {dict(c.connector_status)}",
        f"# stats: boots={c.stats.boots_accepted} reboots={c.stats.reboots} "
        f"transactions={c.stats.transactions_completed} energy_wh={c.stats.energy_wh}",
    ]
    size = sum(len(line) + 1 for line in lines)
    meter = int(sum(c.meter_wh.values()))
    while size < c.config.upload_bytes:
        lines.append(f"{c._now()} INFO  sim[{len(lines):06d}] heartbeat ok, meter {meter} Wh")
        size += len(lines[-1]) + 1
    return ("\n".join(lines) + "\n").encode()[: max(c.config.upload_bytes, 1)]


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class _UploadFailed(Exception):
    pass


async def _put_file(
    client: httpx.AsyncClient, location: str, name: str, content: bytes, method: str
) -> None:
    scheme = urllib.parse.urlsplit(location).scheme
    if scheme not in ("http", "https"):
        raise _UploadFailed(f"cannot upload over {scheme or 'no scheme'}")
    if method == "PUT":
        url = f"{location.rstrip('/')}/{urllib.parse.quote(name)}"
        response = await client.put(url, content=content)
    else:
        response = await client.post(location, files={"file": (name, content, "text/plain")})
    if not 200 <= response.status_code < 300:
        raise _UploadFailed(f"HTTP {response.status_code}")


async def _upload(
    charger: SimulatedCharger,
    upload: Upload,
    content: bytes,
    *,
    method: str,
    retries: int,
    interval: float | None,
    report: Callable[[str], Awaitable[None]],
    done: tuple[str, str],
) -> None:
    """Upload with retries, reporting Uploading, then ``done[0]`` (ok) or ``done[1]``."""
    await report("Uploading")
    headers = {"User-Agent": USER_AGENT}
    async with httpx.AsyncClient(timeout=charger.config.upload_timeout, headers=headers) as client:
        for attempt in range(1 + max(0, retries)):
            if attempt:
                await charger._sleep(
                    charger.config.download_retry_interval if interval is None else interval
                )
            upload.attempts += 1
            try:
                await _put_file(client, upload.location, upload.file_name, content, method)
            except (_UploadFailed, httpx.HTTPError) as exc:
                upload.error = str(exc) or type(exc).__name__
                log.info("upload failed", charger_id=charger.identity, error=upload.error)
                continue
            upload.status, upload.error = done[0], None
            await report(done[0])
            return
    upload.status = done[1]
    await report(done[1])


def _window(start: str | None, stop: str | None) -> str:
    return f"{start or 'beginning'} .. {stop or 'now'}"


async def on_get_diagnostics(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    st = state(charger)
    p = call.payload
    name = _file_name(charger, "diagnostics")
    content = generate_file(charger, "diagnostics", _window(p.get("startTime"), p.get("stopTime")))
    upload = Upload("diagnostics", name, p["location"], None, _sha256(content), len(content))

    async def report(status: str) -> None:
        await agent(charger).notify("DiagnosticsStatusNotification", {"status": status})

    async def start() -> None:
        if st.diagnostics_task is not None:
            st.diagnostics_task.cancel()
        st.uploads.append(upload)
        st.diagnostics_task = charger.spawn_background(
            _upload(
                charger,
                upload,
                content,
                method="POST",
                retries=p.get("retries", 0),
                interval=p.get("retryInterval"),
                report=report,
                done=("Uploaded", "UploadFailed"),
            )
        )

    return Reply({"fileName": name}, then=start)


async def on_get_log(charger: SimulatedCharger, call: rpc.Call) -> Reply:
    security_only(charger, "GetLog")
    st = state(charger)
    p = call.payload
    kind = "security" if p["logType"] == "SecurityLog" else "diagnostics"
    name = _file_name(charger, f"{kind}-log")
    request_id = p["requestId"]
    log_params = p["log"]
    window = _window(log_params.get("oldestTimestamp"), log_params.get("latestTimestamp"))
    content = generate_file(charger, p["logType"], window)
    upload = Upload(
        "log", name, log_params["remoteLocation"], request_id, _sha256(content), len(content)
    )
    status = "AcceptedCanceled" if st.log_status == "Uploading" else "Accepted"

    async def report(upload_status: str) -> None:
        payload = {"status": upload_status, "requestId": request_id}
        await agent(charger).notify("LogStatusNotification", payload)

    async def start() -> None:
        if st.log_task is not None:
            st.log_task.cancel()
        st.uploads.append(upload)
        st.log_request_id = request_id
        st.log_task = charger.spawn_background(
            _upload(
                charger,
                upload,
                content,
                method="PUT",
                retries=p.get("retries", 0),
                interval=p.get("retryInterval"),
                report=report,
                done=("Uploaded", "UploadFailure"),
            )
        )

    return Reply({"status": status, "filename": name}, then=start)
