"""Vendor and model profiles end to end: evota + simulated chargers on loopback.

The API (CRUD, field-named problems, the effective profile of a charger as it boots with new
firmware), what each field changes (triggers refused before sending, images too large,
signed vs plain, timeouts that fit, the per-site cap, vendor configuration key names), and
learning from the job history a real campaign leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evota.store.models import AuditEntry, Job, JobEvent

from .conftest import Keys
from .support import until
from .test_campaigns import POLICY, World, fleet_spec, jobs_of
from .test_firmware_update import MODEL, VENDOR, Bench, running, upload

PROFILES = "/api/v1/vendor-profiles"


@pytest.fixture
async def bench(tmp_path: Path, database_url: str, keys: Keys) -> AsyncIterator[Bench]:
    async with running(Bench, tmp_path, database_url, keys) as b:
        yield b


@pytest.fixture
async def sqlite_bench(tmp_path: Path, sqlite_url: str, keys: Keys) -> AsyncIterator[Bench]:
    async with running(Bench, tmp_path, sqlite_url, keys) as b:
        yield b


async def effective(b: Bench, charger_id: str) -> dict[str, Any]:
    r = await b.api.get(f"/api/v1/chargers/{charger_id}/vendor-profile")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def create(b: Bench, **body: Any) -> dict[str, Any]:
    r = await b.api.post(PROFILES, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_crud_field_errors_and_the_effective_profile_follows_boots(bench: Bench) -> None:
    charger = await bench.charger("VP-0001", version="1.0.0")
    api = bench.api
    seen = await effective(bench, "VP-0001")
    assert seen["default"] is True and seen["profile_id"] is None
    assert (seen["vendor"], seen["model"], seen["firmware_version"]) == (VENDOR, MODEL, "1.0.0")
    assert seen["profile"]["download_protocol"] == "http"

    vendor = await create(bench, vendor=VENDOR.lower(), max_per_site=4)
    r = await api.post(PROFILES, json={"vendor": VENDOR.upper()})  # same scope, other case
    assert r.status_code == 409 and r.json()["field"] == "vendor", r.text
    for body, field in (
        ({"vendor": VENDOR, "model": "X", "trigger_messages": ["Reboot"]}, "trigger_messages"),
        ({"vendor": VENDOR, "model": "X", "download_protocol": "sftp"}, "download_protocol"),
        ({"vendor": VENDOR, "model": "X", "reboot_seconds": -5}, "reboot_seconds"),
        ({"vendor": VENDOR, "firmware_min": "3", "firmware_max": "2"}, "firmware_max"),
        ({"vendor": VENDOR, "colour": "red"}, "colour"),
    ):
        r = await api.post(PROFILES, json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["field"] == field, r.text
    ranged = await create(bench, vendor=VENDOR, model=MODEL.lower(), firmware_min="2.0")
    assert (await effective(bench, "VP-0001"))["profile_id"] == vendor["id"]

    # A change is seen at once (the cache is refreshed on change).
    r = await api.put(f"{PROFILES}/{vendor['id']}", json={"vendor": VENDOR, "max_per_site": 2})
    assert r.status_code == 200 and r.json()["max_per_site"] == 2, r.text
    assert (await effective(bench, "VP-0001"))["profile"]["max_per_site"] == 2

    # The charger comes back on 2.1: the model's profile for 2.0 and later applies from that boot.
    charger.firmware_version = "2.1.0"
    await charger.reboot()
    now = await until(
        lambda: effective(bench, "VP-0001"), lambda e: e["profile_id"] == ranged["id"]
    )
    assert now["firmware_version"] == "2.1.0"

    assert (await api.get(f"{PROFILES}/{ranged['id']}")).json()["model"] == MODEL.lower()
    assert (await api.delete(f"{PROFILES}/{ranged['id']}")).status_code == 204
    r = await api.get(f"{PROFILES}/{ranged['id']}")
    assert r.status_code == 404 and r.json()["field"] == "profile_id"
    assert (await api.delete(f"{PROFILES}/{ranged['id']}")).status_code == 404
    assert (await effective(bench, "VP-0001"))["profile_id"] == vendor["id"]
    listed = (await api.get(PROFILES)).json()
    assert [p["id"] for p in listed["items"]] == [vendor["id"]] and listed["total"] == 1
    assert (await api.get("/api/v1/chargers/NOPE-1/vendor-profile")).status_code == 404
    async with bench.rt.engine.connect() as conn:
        actions = (
            await conn.execute(
                select(AuditEntry.action).where(AuditEntry.action.like("vendor_profile.%"))
            )
        ).scalars()
        assert sorted(actions) == sorted(
            ["vendor_profile.created"] * 2 + ["vendor_profile.updated", "vendor_profile.deleted"]
        )


async def test_a_trigger_the_model_lacks_is_refused_before_sending(sqlite_bench: Bench) -> None:
    b = sqlite_bench
    await b.charger("TR-0001")
    await create(b, vendor=VENDOR, trigger_messages=["Heartbeat", "StatusNotification"])
    url = "/api/v1/chargers/TR-0001/commands/trigger-message"
    r = await b.api.post(url, json={"message": "MeterValues", "reason": "test"})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["field"] == "message" and body["reason"] == "unsupported_by_model"
    assert "does not support TriggerMessage MeterValues" in body["detail"]
    r = await b.api.post(url, json={"message": "Heartbeat", "reason": "test"})
    assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
    async with b.rt.engine.connect() as conn:
        outcomes = (
            await conn.execute(
                select(AuditEntry.outcome)
                .where(AuditEntry.action == "command.trigger-message")
                .order_by(AuditEntry.seq)
            )
        ).scalars()
        assert list(outcomes) == ["error:unsupported_by_model", "Accepted"]


async def test_image_size_signed_support_and_timeouts_follow_the_profile(
    tmp_path: Path, sqlite_url: str, keys: Keys
) -> None:
    # Installs take 2 s on these chargers; evota is configured to allow 1 s.
    async with running(Bench, tmp_path, sqlite_url, keys, job_install_timeout=1.0) as b:
        fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", size=16 * 1024)
        charger = await b.charger("IM-0001")
        charger.config = replace(charger.config, install_duration=1200.0)  # 2 s at speed 600
        profile = await create(b, vendor=VENDOR, max_image_bytes=1000)
        r = await b.update("IM-0001", fw["id"])
        assert r.status_code == 409 and r.json()["reason"] == "image_too_large", r.text
        assert r.json()["field"] == "firmware_id"
        # No signed updates, a typical install of 5 s: plain, and the install may take 10 s.
        body = {"vendor": VENDOR, "signed_updates": False, "install_seconds": 5}
        r = await b.api.put(f"{PROFILES}/{profile['id']}", json=body)
        assert r.status_code == 200, r.text
        r = await b.update("IM-0001", fw["id"])
        assert r.status_code == 202, r.text
        job = await b.finished(r.json()["job_id"])
        assert job["state"] == "succeeded", job
        async with b.rt.engine.connect() as conn:
            sent = (
                await conn.execute(
                    select(JobEvent.detail).where(
                        JobEvent.job_id == job["id"], JobEvent.event == "sent"
                    )
                )
            ).scalars()
            assert [d["action"] for d in sent] == ["UpdateFirmware"]
            method = (await conn.execute(select(Job.method).where(Job.id == job["id"]))).scalar()
            assert method == "plain"


@pytest.fixture
async def world(tmp_path: Path, database_url: str, keys: Keys) -> AsyncIterator[World]:
    """Both databases: learning extracts the status from each event's JSON in SQL."""
    async with running(World, tmp_path, database_url, keys, campaign_tick_seconds=0.2) as w:
        yield w


async def test_campaign_per_site_cap_exclusions_and_learning(world: World) -> None:
    fw = await upload(world.api, world.tmp_path, world.keys, "2.0.0", size=16 * 1024)
    spec = fleet_spec(8, world.keys)  # 4 sites, 2 chargers each
    await world.fleet(spec)
    # A model that is safe one at a time per site; the policy alone would allow 2.
    await create(world, vendor=VENDOR, model=MODEL, max_per_site=1)
    await create(world, vendor=VENDOR, model="Other", max_image_bytes=10)  # matches no charger
    policy = {**POLICY, "max_per_site_fraction": None, "max_per_site": 2}
    c = await world.campaign(fw["id"], waves=[{"percent": 100}], policy=policy)
    assert c["eligible"] == 8 and c["excluded"] == []
    r = await world.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    assert r.status_code == 200, r.text
    done = await world.until(c["id"], lambda c: c["state"] != "running", timeout=90)
    assert done["state"] == "completed", done["state_reason"]
    jobs = await jobs_of(world.rt, c["id"])
    assert len(jobs) == 8 and {j.state for j in jobs} == {"succeeded"}
    # Never two unfinished jobs on one site at the same time.
    async with world.rt.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Job.charger_id, Job.created_at, Job.finished_at).where(
                    Job.campaign_id == c["id"]
                )
            )
        ).all()
    site = {ch.identity: ch.site_id for ch in spec.chargers}
    by_site: dict[str, list[Any]] = {}
    for row in rows:
        by_site.setdefault(site[row.charger_id], []).append(row)
    for runs in by_site.values():
        first, second = sorted(runs, key=lambda r: r.created_at)
        assert first.finished_at <= second.created_at, (first, second)

    # Learning: what those 8 jobs showed, suggested, applied only on request.
    r = await world.api.get(f"{PROFILES}/suggestions", params={"vendor": VENDOR})
    assert r.status_code == 200, r.text
    [seen] = r.json()
    assert (seen["vendor"], seen["model"], seen["jobs"]) == (VENDOR, MODEL, 8)
    for phase in ("download_seconds", "install_seconds", "reboot_seconds"):
        d = seen[phase]
        assert d["n"] == 8 and 0 <= d["median"] <= d["p90"], (phase, d)
    assert seen["installed_before_reboot"] == {"before": 0, "after": 8}  # the simulator's way
    suggested = seen["suggested"]
    assert suggested["installed_before_reboot"] is False
    assert suggested["install_seconds"] >= seen["install_seconds"]["p90"]
    current = (await world.api.get(PROFILES)).json()["items"]
    assert [p["install_seconds"] for p in current] == [None, None]  # nothing applied silently
    assert seen["profile_id"] == next(p["id"] for p in current if p["model"] == MODEL)

    apply = f"{PROFILES}/suggestions/apply"
    r = await world.api.post(apply, json={"vendor": VENDOR, "model": MODEL, "fields": ["nope"]})
    assert r.status_code == 422 and r.json()["field"] == "fields", r.text
    r = await world.api.post(apply, json={"vendor": VENDOR, "model": "Other"})
    assert r.status_code == 409 and r.json()["field"] == "vendor", r.text
    r = await world.api.post(
        apply,
        json={"vendor": VENDOR, "model": MODEL, "fields": ["install_seconds", "reboot_seconds"]},
    )
    assert r.status_code == 200, r.text
    applied = r.json()
    assert applied["id"] == seen["profile_id"] and applied["max_per_site"] == 1  # kept
    assert applied["install_seconds"] == suggested["install_seconds"]
    assert applied["installed_before_reboot"] is None  # not chosen


async def test_configuration_drift_and_changes_use_the_vendors_key_name(
    tmp_path: Path, sqlite_url: str
) -> None:
    from .test_operations import desk

    async with desk(tmp_path, sqlite_url) as d:
        # This model calls MeterValueSampleInterval "MeterInterval_s".
        r = await d.api.post(
            PROFILES,
            json={"vendor": VENDOR, "config_keys": {"MeterValueSampleInterval": "MeterInterval_s"}},
        )
        assert r.status_code == 201, r.text
        [cid] = await d.chargers(1, "CK-", start=False)
        config = d.configs[cid]
        config["MeterInterval_s"] = config.pop("MeterValueSampleInterval")
        await d.fleets[-1].start()
        await d.fleets[-1].wait_for_all(lambda c: c.accepted, 15)
        r = await d.api.post(
            "/api/v1/config-profiles",
            json={
                "name": "metering",
                "target": {"charger_ids": [cid]},
                "settings": {"MeterValueSampleInterval": "30"},
            },
        )
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        drift = await until(
            lambda: d.api.get(f"/api/v1/config-profiles/{pid}/drift"),
            lambda res: res.json()["not_fetched"] == 0,
        )
        [row] = drift.json()["rows"]
        assert (row["key"], row["kind"], row["actual"]) == (
            "MeterValueSampleInterval",
            "differs",
            "60",
        )
        r = await d.api.post(f"/api/v1/config-profiles/{pid}/apply", json={"reason": "metering"})
        assert r.status_code == 201, r.text
        o = await d.ended(r.json()["id"])
        assert o["state"] == "completed", o
        assert o["results"][0]["detail"]["changed"] == {"MeterValueSampleInterval": "Accepted"}
        assert d.configs[cid]["MeterInterval_s"] == ("30", False)
        assert "MeterValueSampleInterval" not in d.configs[cid]
        assert (await d.api.get(f"/api/v1/config-profiles/{pid}/drift")).json()["drifted"] == 0


async def test_cli(sqlite_bench: Bench) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from evota.cli import app

    from .conftest import TOKEN

    b = sqlite_bench
    await b.charger("CLI-0001")
    env = {"EVOTA_URL": f"http://127.0.0.1:{b.rt.http_port}", "EVOTA_TOKEN": TOKEN}
    cli = CliRunner()

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(cli.invoke, app, ["vendor-profile", *args], env=env)

    r = await run("set", VENDOR, "--no-signed", "--config-key", "HeartbeatInterval=HB")
    assert r.exit_code == 0 and r.output.startswith("created"), r.output
    r = await run("set", VENDOR.upper(), "--max-per-site", "2", "--json")
    assert r.exit_code == 0, r.output
    saved = json.loads(r.output)
    assert (saved["signed_updates"], saved["max_per_site"]) == (False, 2)  # kept and added
    assert saved["config_keys"] == {"HeartbeatInterval": "HB"}
    r = await run("set", VENDOR, "--clear", "signed_updates", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["signed_updates"] is None, r.output
    r = await run("list", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["total"] == 1, r.output
    r = await run("list")
    assert r.exit_code == 0 and VENDOR in r.output, r.output
    r = await run("show", "--charger", "CLI-0001")
    assert r.exit_code == 0 and f"#{saved['id']}" in r.output, r.output
    r = await run("show", str(saved["id"]))
    assert r.exit_code == 0 and "max_per_site: 2" in r.output, r.output
    r = await run("suggest")
    assert r.exit_code == 0, r.output
    for args, words in (
        (("set", VENDOR, "--protocol", "sftp"), "download_protocol"),
        (("set", VENDOR, "--clear", "vendor"), "--clear"),
        (("set", VENDOR, "--config-key", "nokey"), "--config-key"),
        (("suggest", "--apply"), "--vendor"),
        (("suggest", "--apply", "--vendor", VENDOR), "no suggestion"),
        (("show",), "give a profile id or --charger"),
        (("delete", "999"), "no vendor profile 999"),
    ):
        r = await run(*args)
        assert r.exit_code == 1, (args, r.output)
        assert words in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
    r = await run("delete", str(saved["id"]))
    assert r.exit_code == 0, r.output
    assert (await effective(b, "CLI-0001"))["default"] is True


async def test_access_is_checked_on_the_profile_and_the_charger(sqlite_bench: Bench) -> None:
    from .conftest import api_client, session_for

    b = sqlite_bench
    await b.charger("SC-0001")
    for site, region in (("s-in", "r-in"), ("s-out", "r-out")):
        r = await b.api.post(
            "/api/v1/sites", json={"id": site, "name": site, "timezone": "UTC", "region": region}
        )
        assert r.status_code == 201, r.text
    r = await b.api.patch("/api/v1/chargers/SC-0001", json={"site_id": "s-out"})
    assert r.status_code == 200, r.text
    created = await create(b, vendor=VENDOR, max_per_site=1)
    scoped = await session_for(b.rt, "scoped", ["firmware_manager"], regions=["r-in"])
    viewer = await session_for(b.rt, "viewer", ["viewer"])
    async with api_client(b.rt, scoped) as api:
        # out of its scope the charger does not exist; fleet-wide profiles need a full grant
        r = await api.get("/api/v1/chargers/SC-0001/vendor-profile")
        assert r.status_code == 404 and r.json()["field"] == "id", r.text
        assert (await api.get(PROFILES)).status_code == 403
        r = await api.put(f"{PROFILES}/{created['id']}", json={"vendor": VENDOR})
        assert r.status_code == 403, r.text
    async with api_client(b.rt, viewer) as api:
        assert (await api.get(PROFILES)).json()["total"] == 1
        assert (await api.get("/api/v1/chargers/SC-0001/vendor-profile")).status_code == 200
        r = await api.post(PROFILES, json={"vendor": "Other"})
        assert r.status_code == 403 and r.json()["permission"] == "firmware.write", r.text
        r = await api.delete(f"{PROFILES}/{created['id']}")
        assert r.status_code == 403, r.text
    assert (await b.api.get(f"{PROFILES}/{created['id']}")).json()["max_per_site"] == 1
