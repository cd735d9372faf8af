"""FTP and FTPS delivery end to end (issue 17 §4): evota with its FTP listener, vendor profiles
that say which chargers download over FTP, and the simulator's FTP-only chargers (stdlib
ftplib) on loopback. A campaign over a mixed HTTP/FTP fleet completes; FTPS verifies the
server against a CA made here; the FTP password (the download token) is never recorded."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from sqlalchemy import select

from evota.fleet.vendors import DownloadProtocol
from evota.sim import fleet_from_flags
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec, FaultProfile, FleetSpec
from evota.store.models import AuditEntry, Job, JobEvent
from tests.firmware.vendor_site import make_tls

from .conftest import Keys
from .support import until
from .test_campaigns import SITES, World, jobs_of
from .test_firmware_update import VENDOR, events, running, upload

LEGACY = "Legacy-FTP"  # the FTP-only model


def ftp_only(spec: ChargerSpec, keys: Keys, **changes: Any) -> ChargerSpec:
    values: dict[str, Any] = {
        "firmware_roots": (keys.ca_cert.decode(),),
        "download_protocols": ("ftp",),
        **changes,
    }
    return replace(spec, **values)


def mixed_fleet(keys: Keys, http: int, ftp: int, **ftp_faults: Any) -> FleetSpec:
    """``http`` ordinary chargers and ``ftp`` FTP-only chargers of model LEGACY."""
    plain = fleet_from_flags(http, prefix="WEB-", seed="ftp", sites=SITES)
    legacy = fleet_from_flags(ftp, prefix="FTP-", seed="ftp", sites=SITES, model=LEGACY)
    roots = (keys.ca_cert.decode(),)
    return replace(
        plain,
        chargers=(
            *(replace(c, firmware_roots=roots) for c in plain.chargers),
            *(ftp_only(c, keys, faults=FaultProfile(**ftp_faults)) for c in legacy.chargers),
        ),
    )


@pytest.fixture
async def world(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[World]:
    async with running(
        World, tmp_path, sqlite_url, keys, campaign_tick_seconds=0.2, ftp_port=0
    ) as w:
        yield w


async def profile(world: World, protocol: DownloadProtocol = "ftp") -> None:
    """The vendor profile of the LEGACY model says how it downloads (as an operator sets it)."""
    body = {"vendor": VENDOR, "model": LEGACY, "download_protocol": protocol}
    r = await world.api.post("/api/v1/vendor-profiles", json=body)
    assert r.status_code == 201, r.text


async def recorded(world: World) -> str:
    """Every job history entry and audit entry, as text."""
    async with world.rt.engine.connect() as conn:
        history = (await conn.execute(select(JobEvent.__table__))).all()
        audit = (await conn.execute(select(AuditEntry.__table__))).all()
    return json.dumps([[list(r) for r in history], [list(r) for r in audit]], default=str)


def password_of(charger: SimulatedCharger) -> str:
    agent = charger.firmware_agent
    assert agent is not None and agent.last_update is not None
    password = urllib.parse.urlsplit(agent.last_update.location).password
    assert password
    return password


async def update_one(world: World, charger: SimulatedCharger, firmware_id: str) -> dict[str, Any]:
    r = await world.update(charger.identity, firmware_id)
    assert r.status_code in (200, 201, 202), r.text
    return await world.finished(r.json()["job_id"], timeout=30)


async def test_campaign_over_a_mixed_http_ftp_fleet_completes(world: World):
    await profile(world)
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=512 * 1024,
                      models=("Sim-AC22", LEGACY))  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        # every FTP charger's link drops once mid-download: it resumes with REST
        fleet = await world.fleet(mixed_fleet(world.keys, 3, 3, link_drop=1.0), session_rate=0.0)
        c = await world.campaign(fw["id"], waves=[{"percent": 100}])
        assert c["eligible"] == 6
        r = await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={"reason": "test"})
        assert r.status_code == 200, r.text
        done = await world.until(
            c["id"], lambda c: c["state"] in ("completed", "paused", "aborted"), timeout=90
        )
    assert done["state"] == "completed", done
    jobs = await jobs_of(world.rt, c["id"])
    assert sorted((j.charger_id, j.state) for j in jobs) == sorted(
        (ch.identity, "succeeded") for ch in fleet.chargers
    )
    endpoint = world.rt.ftp_endpoint
    assert endpoint is not None
    secrets = []  # every download token handed out: FTP passwords and HTTP path segments
    for ch in fleet.chargers:
        agent = ch.firmware_agent
        assert agent is not None and agent.last_update is not None
        assert agent.last_download is not None and ch.firmware_version == "2.0.0"
        url = urllib.parse.urlsplit(agent.last_update.location)
        if ch.identity.startswith("FTP-"):
            assert (url.scheme, url.username, url.port) == ("ftp", ch.identity, endpoint.port)
            assert agent.last_download.resumed >= 1  # REST after the dropped link
            secrets.append(password_of(ch))
        else:
            assert (url.scheme, url.port) == ("http", world.rt.download_port)
            secrets.append(url.path.split("/")[4])
    # FTP bytes are logged per job like HTTP bytes (resumed: less than two copies each)
    for row in await _job_ids(world, "FTP-"):
        job = await _served(world, row.id, fw["size"])
        assert fw["size"] <= job["bytes_served"] < 2 * fw["size"]
    # no download token is recorded in the job history or audit, nor logged (tokens for
    # one image and expiry share their first ~50 characters: compare them whole)
    stored, logged = await recorded(world), repr(logs)
    for secret in secrets:
        assert len(secret) > 80 and secret not in stored and secret not in logged


async def _job_ids(world: World, prefix: str) -> list[Any]:
    async with world.rt.engine.connect() as conn:
        return list(
            (await conn.execute(select(Job.id).where(Job.charger_id.startswith(prefix)))).all()
        )


async def _served(world: World, job_id: int, size: int) -> dict[str, Any]:
    job: dict[str, Any] = await until(
        lambda: world.job(job_id), lambda j: j["bytes_served"] >= size, timeout=10
    )
    return job


async def test_the_job_history_shows_the_ftp_location_without_its_password(world: World):
    await profile(world)
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", models=(LEGACY,))
    fleet = await world.fleet(mixed_fleet(world.keys, 1, 1))
    ftp = fleet["FTP-0001"]
    job = await update_one(world, ftp, fw["id"])
    assert job["state"] == "succeeded", job
    port = world.rt.ftp_endpoint.port  # type: ignore[union-attr]
    location = events(job, "sent")[-1]["detail"]["location"]
    assert location == f"ftp://FTP-0001:<token>@127.0.0.1:{port}/firmware.bin"
    assert password_of(ftp) not in await recorded(world)


async def test_an_ftp_only_charger_without_an_ftp_profile_fails_the_download(world: World):
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", models=(LEGACY,))
    fleet = await world.fleet(mixed_fleet(world.keys, 1, 1))
    job = await update_one(world, fleet["FTP-0001"], fw["id"])  # no profile: an http:// URL
    assert job["state"] == "failed" and job["failure"] == "download_failed", job
    assert events(job, "sent")[-1]["detail"]["location"].startswith("http://")


async def test_ftps_profile_without_tls_falls_back_to_http(world: World):
    await profile(world, "ftps")  # this evota offers no FTPS (EVOTA_FTP_TLS unset)
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", models=(LEGACY,))
    fleet = await world.fleet(mixed_fleet(world.keys, 1, 1))
    with structlog.testing.capture_logs() as logs:
        job = await update_one(world, fleet["FTP-0001"], fw["id"])
    assert events(job, "sent")[-1]["detail"]["location"].startswith("http://")
    assert any(e["event"].startswith("download protocol not served") for e in logs)


async def test_ftps_end_to_end_with_a_ca_made_here(tmp_path: Path, sqlite_url: str, keys: Keys):
    ca, cert, key, _ = make_tls(tmp_path / "tls")  # for 127.0.0.1
    async with running(
        World, tmp_path, sqlite_url, keys, ftp_port=0, ftp_tls=True, ftp_tls_cert=cert,
        ftp_tls_key=key,
    ) as world:  # fmt: skip
        await profile(world, "ftps")
        fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", models=(LEGACY,))
        base = fleet_from_flags(2, prefix="TLS-", seed="ftps", model=LEGACY)
        trusting = ftp_only(
            base.chargers[0],
            keys,
            download_protocols=("ftps",),
            download_ca=ca.read_text(),
            faults=FaultProfile(link_drop=1.0),
        )
        stranger = ftp_only(base.chargers[1], keys, download_protocols=("ftps",))  # system CAs
        fleet = await world.fleet(replace(base, chargers=(trusting, stranger)))
        job = await update_one(world, fleet[trusting.identity], fw["id"])
        assert job["state"] == "succeeded", job
        assert events(job, "sent")[-1]["detail"]["location"].startswith(
            f"ftps://{trusting.identity}:<token>@127.0.0.1:"
        )
        agent = fleet[trusting.identity].firmware_agent
        assert agent is not None and agent.last_download is not None
        assert agent.last_download.resumed >= 1
        # a charger that does not trust the server's CA refuses to download from it
        job = await update_one(world, fleet[stranger.identity], fw["id"])
        assert job["state"] == "failed" and job["failure"] == "download_failed", job


def test_fleet_file_download_protocols(tmp_path: Path) -> None:
    from evota.sim.fleet import FleetFileError, dump_fleet, parse_fleet

    ca, _, _, _ = make_tls(tmp_path / "tls")
    text = f"""
groups:
  - {{prefix: OLD-, count: 2, model: {LEGACY}, download_protocols: [ftp, ftps],
     download_ca: {ca}}}
chargers:
  - {{identity: NEW-1}}
"""
    fleet = parse_fleet(text)
    old, new = fleet.chargers[0], fleet.chargers[2]
    assert old.download_protocols == ("ftp", "ftps") and old.download_ca == ca.read_text()
    assert new.download_protocols == ("http", "https") and new.download_ca is None
    assert parse_fleet(dump_fleet(fleet)) == fleet
    with pytest.raises(FleetFileError, match="download_protocols"):
        parse_fleet("chargers: [{identity: X-1, download_protocols: [gopher]}]")
    with pytest.raises(FleetFileError, match="download_protocols"):
        parse_fleet("chargers: [{identity: X-1, download_protocols: []}]")


def test_sim_flags_make_ftp_only_chargers(tmp_path: Path) -> None:
    from evota.sim.cli import _fleet_spec
    from evota.sim.fleet import FleetError

    ca, _, _, _ = make_tls(tmp_path / "tls")
    spec = _fleet_spec(
        None, 2, "OLD-", None, LEGACY, None, None, None,
        download_protocols=["ftps"], download_ca=ca,
    )  # fmt: skip
    assert {(c.download_protocols, c.download_ca) for c in spec.chargers} == {
        (("ftps",), ca.read_text())
    }
    with pytest.raises(FleetError, match="--download-protocol: must be http, https, ftp"):
        fleet_from_flags(1, download_protocols=("gopher",))
    with pytest.raises(FleetError, match="--download-ca: cannot read"):
        fleet_from_flags(1, download_ca=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"ftp_tls": True}, "ftp_tls_key"),  # FTPS needs its certificate and key
        ({"ftp_tls": True, "ftp_tls_key": "k.pem"}, "ftp_tls_key"),
        ({"ftp_passive_ports": "60000"}, "ftp_passive_ports"),
        ({"ftp_passive_ports": "70000-70010"}, "ftp_passive_ports"),
        ({"ftp_passive_ports": "1000-20000"}, "ftp_passive_ports"),
        ({"ftp_port": 70000}, "ftp_port"),
    ],
)
def test_ftp_settings_are_checked(tmp_path: Path, values: dict[str, Any], field: str) -> None:
    from pydantic import ValidationError

    from evota.config import Settings

    with pytest.raises(ValidationError) as exc:
        Settings(data_dir=tmp_path, **values)
    assert [e["loc"] for e in exc.value.errors()] == [(field,)]
