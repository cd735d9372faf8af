"""Scorecards and the fleet's firmware picture through the API, on SQLite and PostgreSQL
(issue 13 §3). The history a fleet leaves (boots, finished jobs, campaigns, security events)
is seeded into the real tables; chargers, sites and images go through the API."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, update

from evota.runtime import Runtime
from evota.store.models import Campaign, Charger, ChargerEvent, Job

from ..conftest import api_client, provision, session_for
from ..test_firmware_update import MODEL, VENDOR, allow_unsigned, upload

KEY = "k3y-0f-at-least-16-chars"


async def _seed(rt: Runtime, api: httpx.AsyncClient, tmp_path: Path) -> dict[str, Any]:
    """Paris (FR): P1 updated 1.0.0 -> 2.0.0, P2 failed to download and stays on 1.0.0.
    Berlin (DE): B1 updated by another campaign (a rollback failed), B2 on 1.0.0, and X1 of
    a vendor whose name is a spreadsheet formula."""
    for site, region in (("paris", "FR"), ("berlin", "DE")):
        r = await api.post(
            "/api/v1/sites", json={"id": site, "name": site, "timezone": "UTC", "region": region}
        )
        assert r.status_code == 201, r.text
    await allow_unsigned(api)
    old = await upload(api, tmp_path, None, "1.0.0", size=1024, state="released")
    new = await upload(api, tmp_path, None, "2.0.0", size=1024, state="released")
    now = rt.clock.now()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    chargers = {
        "P1": ("paris", VENDOR, "2.0.0"),
        "P2": ("paris", VENDOR, "1.0.0"),
        "B1": ("berlin", VENDOR, "2.0.0"),
        "B2": ("berlin", VENDOR, "1.0.0"),
        "X1": ("berlin", "=Evil", "-1"),
    }
    for cid, (site, _, _) in chargers.items():
        await provision(rt, cid, KEY, site_id=site)
    c1, c2 = str(uuid.uuid4()), str(uuid.uuid4())
    async with rt.engine.begin() as conn:
        for cid, (_, vendor, version) in chargers.items():
            await conn.execute(
                update(Charger)
                .where(Charger.id == cid)
                .values(vendor=vendor, model=MODEL, firmware_version=version, created_at=ago(10))
            )
        for cid, name in ((c1, "paris rollout"), (c2, "berlin rollout")):
            await conn.execute(
                insert(Campaign).values(
                    id=cid,
                    name=name,
                    firmware_id=new["id"],
                    state="completed",
                    created_at=ago(4),
                    updated_at=ago(2),
                )
            )
        boots = [("P1", ago(5), "1.0.0"), ("B1", ago(5), "1.0.0"), ("B1", ago(4), "1.0.0")]
        for cid, at, version in boots:
            await conn.execute(
                insert(ChargerEvent).values(
                    charger_id=cid,
                    kind="boot",
                    status="Accepted",
                    data={"vendor": VENDOR, "model": MODEL, "firmware_version": version},
                    received_at=at,
                )
            )
        for cid, kind in (("B1", "TamperDetectionActivated"), ("P1", "SecurityLogWasCleared")):
            await conn.execute(
                insert(ChargerEvent).values(
                    charger_id=cid, kind="security_event", status=kind, received_at=ago(1)
                )
            )
        jobs = [
            ("P1", new, c1, "update", "succeeded", None, "1.0.0", ago(2)),
            ("P2", new, c1, "update", "failed", "download_failed", "1.0.0", ago(2)),
            ("B1", new, c2, "update", "succeeded", None, "1.0.0", ago(3)),
            ("B1", old, None, "rollback", "failed", "timed_out", "2.0.0", ago(1)),
        ]
        for cid, fw, campaign, kind, state, failure, previous, at in jobs:
            await conn.execute(
                insert(Job).values(
                    charger_id=cid,
                    firmware_id=fw["id"],
                    campaign_id=campaign,
                    kind=kind,
                    state=state,
                    failure=failure,
                    target_version=fw["version"],
                    previous_version=previous,
                    created_at=at,
                    updated_at=at,
                    finished_at=at,
                )
            )
    return {"old": old, "new": new, "c1": c1, "c2": c2}


def _day(body: dict[str, Any], index: int) -> dict[str, int]:
    return {v["version"]: v["chargers"] for v in body["items"][index]["versions"]}


async def test_scorecard_history_and_behind_count_only_the_callers_chargers(
    evota: Runtime, tmp_path: Path
) -> None:
    async with api_client(evota) as admin:
        seeded = await _seed(evota, admin, tmp_path)
        paula = await session_for(evota, "paula", ["viewer"], sites=["paris"])
        async with api_client(evota, paula) as scoped:
            # -- the scorecard ------------------------------------------------------------------
            path = f"/api/v1/firmware/{seeded['new']['id']}/scorecard"
            card = (await admin.get(path)).json()
            assert card["firmware"]["version"] == "2.0.0"
            assert card["running"]["total"] == 2
            assert {r["site_id"]: r["chargers"] for r in card["running"]["by_site"]} == {
                "paris": 1,
                "berlin": 1,
            }
            assert card["running"]["by_model"] == [{"model": MODEL, "chargers": 2}]
            incidents = card["incidents"]
            assert incidents["update_jobs"] == {"failed": 1, "succeeded": 2}
            assert incidents["failed_by_reason"] == [{"reason": "download_failed", "jobs": 1}]
            assert incidents["rollbacks_away"] == {"failed": 1}
            assert {e["type"] for e in incidents["security_events"]} == {
                "TamperDetectionActivated",
                "SecurityLogWasCleared",
            }
            assert {c["id"] for c in card["campaigns"]} == {seeded["c1"], seeded["c2"]}
            assert card["predecessor"]["id"] == seeded["old"]["id"]
            assert card["kpis_url"] == f"/api/v1/firmware/{seeded['new']['id']}/kpis"

            r = await scoped.get(path)
            assert r.status_code == 200, r.text
            mine = r.json()
            assert mine["running"]["total"] == 1
            assert mine["running"]["by_site"] == [{"site_id": "paris", "chargers": 1}]
            assert mine["running"]["by_region"] == [{"region": "FR", "chargers": 1}]
            assert mine["incidents"]["update_jobs"] == {"failed": 1, "succeeded": 1}
            assert mine["incidents"]["rollbacks_away"] == {}
            assert mine["incidents"]["security_events"] == [
                {"type": "SecurityLogWasCleared", "events": 1}
            ]
            assert [c["id"] for c in mine["campaigns"]] == [seeded["c1"]]
            assert mine["campaigns"][0]["jobs"] == {"failed": 1, "succeeded": 1}

            # -- the history ---------------------------------------------------------------------
            r = await admin.get("/api/v1/fleet/firmware", params={"days": 7, "vendor": VENDOR})
            assert r.status_code == 200, r.text
            history = r.json()
            assert len(history["items"]) == 7
            assert _day(history, 0) == {"1.0.0": 4}
            assert _day(history, 3) == {"2.0.0": 1, "1.0.0": 3}  # B1 three days ago
            assert _day(history, 4) == {"2.0.0": 2, "1.0.0": 2}  # P1 two days ago
            assert _day(history, 6) == {"2.0.0": 2, "1.0.0": 2}
            assert history["items"][6]["fragmentation"] == 0.5
            r = await scoped.get("/api/v1/fleet/firmware", params={"days": 7})
            mine = r.json()
            assert max(d["chargers"] for d in mine["items"]) == 2  # never a Berlin charger
            assert _day(mine, 0) == {"1.0.0": 2} and _day(mine, 6) == {"2.0.0": 1, "1.0.0": 1}

            # -- who is behind --------------------------------------------------------------------
            behind = (await admin.get("/api/v1/fleet/firmware/behind")).json()
            assert behind["behind"] == 2
            assert behind["items"] == [
                {
                    "vendor": VENDOR,
                    "model": MODEL,
                    "version": "1.0.0",
                    "chargers": 2,
                    "latest": "2.0.0",
                    "releases_behind": 1,
                    "chargers_url": f"/api/v1/chargers?vendor={VENDOR}&model={MODEL}"
                    "&firmware_version=1.0.0",
                }
            ]
            mine = (await scoped.get("/api/v1/fleet/firmware/behind")).json()
            assert mine["behind"] == 1 and mine["items"][0]["chargers"] == 1
            assert [(m["vendor"], m["chargers"]) for m in mine["models"]] == [(VENDOR, 2)]


async def test_csv_exports_are_spreadsheet_safe(evota: Runtime, tmp_path: Path) -> None:
    async with api_client(evota) as admin:
        await _seed(evota, admin, tmp_path)
        r = await admin.get("/api/v1/fleet/firmware", params={"days": 2, "format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == ["day", "vendor", "version", "chargers"]
        assert [row[1:] for row in rows if row[1].startswith("'")] == [["'=Evil", "'-1", "1"]] * 2
        r = await admin.get("/api/v1/fleet/firmware/behind", params={"format": "csv"})
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows == [
            ["vendor", "model", "version", "chargers", "latest", "releases_behind"],
            [VENDOR, MODEL, "1.0.0", "2", "2.0.0", "1"],
        ]


async def test_bad_parameters_are_problems_naming_the_field(evota: Runtime) -> None:
    async with api_client(evota) as admin:
        for params, field in (
            ({"days": 0}, "days"),
            ({"days": 367}, "days"),
            ({"format": "xml"}, "format"),
            ({"vendor": "v" * 51}, "vendor"),
        ):
            r = await admin.get("/api/v1/fleet/firmware", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["field"] == field
        r = await admin.get(f"/api/v1/firmware/{uuid.uuid4()}/scorecard")
        assert r.status_code == 404 and r.json()["field"] == "id"
        r = await admin.get(f"/api/v1/firmware/{uuid.uuid4()}/scorecard", params={"days": 0})
        assert r.status_code == 422 and r.json()["field"] == "days"


async def test_cli_prints_scorecards_and_the_fleet_picture(
    evota_sqlite: Runtime, tmp_path: Path
) -> None:
    from ..test_cli import invoke

    rt = evota_sqlite
    async with api_client(rt) as admin:
        seeded = await _seed(rt, admin, tmp_path)
    new = seeded["new"]["id"]
    r = await invoke(rt, "firmware", "scorecard", new, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["running"]["total"] == 2
    r = await invoke(rt, "firmware", "scorecard", "2.0.0", "--vendor", VENDOR)
    assert r.exit_code == 0, r.output
    assert "running on 2 chargers" in r.output and "failed, download_failed: 1" in r.output
    assert "predecessor: 1.0.0 (released)" in r.output and "paris rollout" in r.output
    # a scoped operator (no firmware.read) names the image by id and sees its own chargers
    paula = await session_for(rt, "paula", ["viewer"], sites=["paris"])
    r = await invoke(rt, "firmware", "scorecard", new, "--json", token=paula)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["running"]["total"] == 1

    r = await invoke(rt, "fleet", "firmware", "--days", "7", "--vendor", VENDOR)
    assert r.exit_code == 0, r.output
    assert "2.0.0" in r.output and "+2" in r.output and "-2" in r.output
    r = await invoke(rt, "fleet", "firmware", "--behind", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["behind"] == 2, r.output
    r = await invoke(rt, "fleet", "firmware", "--behind")
    assert r.exit_code == 0 and "Behind the latest release: 2 chargers" in r.output, r.output
    r = await invoke(rt, "fleet", "firmware", "--days", "2", "--csv")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "day,vendor,version,chargers"
    assert "'=Evil,'-1,1" in r.output

    r = await invoke(rt, "firmware", "scorecard", str(uuid.uuid4()))
    assert r.exit_code == 1 and "Unknown firmware" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = await invoke(rt, "fleet", "firmware", "--days", "0")
    assert r.exit_code != 0 and "days" in r.output


async def test_console_pages_show_the_scorecard_and_the_fleet_picture(
    evota_sqlite: Runtime, tmp_path: Path
) -> None:
    rt = evota_sqlite
    async with api_client(rt) as admin:
        seeded = await _seed(rt, admin, tmp_path)
    base = f"http://127.0.0.1:{rt.http_port}"
    root = await session_for(rt, "root", ["firmware_manager"])
    paula = await session_for(rt, "paula", ["viewer"], sites=["paris"])
    async with httpx.AsyncClient(base_url=base, cookies={"evota_session": root}) as web:
        page = await web.get(f"/console/firmware/{seeded['new']['id']}")
        assert page.status_code == 200, page.text
        assert 'data-testid="scorecard"' in page.text
        assert "download_failed 1" in page.text and "berlin rollout" in page.text
        assert f"/console/firmware/{seeded['old']['id']}" in page.text  # the predecessor
        overview = await web.get("/console/")
        assert 'href="/console/fleet/firmware"' in overview.text
        page = await web.get("/console/fleet/firmware", params={"days": "7"})
        assert page.status_code == 200, page.text
        assert 'data-stat="behind">2<' in page.text
        assert "/api/v1/fleet/firmware?days=7&amp;format=csv" in page.text
        assert "&#39;=Evil" not in page.text and "=Evil" in page.text  # escaped, not quoted
        bad = await web.get("/console/fleet/firmware", params={"days": "0"})
        assert bad.status_code == 422 and "field days" in bad.text
    async with httpx.AsyncClient(base_url=base, cookies={"evota_session": paula}) as web:
        page = await web.get("/console/fleet/firmware")
        assert page.status_code == 200, page.text
        assert 'data-stat="behind">1<' in page.text and "=Evil" not in page.text


async def test_history_keeps_every_version_change_and_drops_repeated_boots(
    evota: Runtime, tmp_path: Path
) -> None:
    """The database drops boots that repeat the version before them; a boot back to the old
    version after a job's update is a change, not a repeat (what a per-boot comparison
    would miss)."""
    await provision(evota, "Z1", KEY)
    midnight = evota.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)

    def at(days_ago: int, hour: int) -> Any:
        return midnight - timedelta(days=days_ago) + timedelta(hours=hour)

    async with evota.engine.begin() as conn:
        await conn.execute(
            update(Charger)
            .where(Charger.id == "Z1")
            .values(vendor="Zed", model="Z", firmware_version="1.0", created_at=at(10, 0))
        )
        for day, hour, version in ((6, 1, "1.0"), (5, 1, "1.0"), (4, 2, "2.0"), (3, 1, "1.0")):
            await conn.execute(
                insert(ChargerEvent).values(
                    charger_id="Z1",
                    kind="boot",
                    data={"firmware_version": version},
                    received_at=at(day, hour),
                )
            )
        await conn.execute(
            insert(ChargerEvent).values(
                charger_id="Z1", kind="boot", data={"reason": "no version"}, received_at=at(2, 1)
            )
        )
    async with api_client(evota) as admin:
        await allow_unsigned(admin)  # the job below needs an image row, of any vendor
        fw = await upload(admin, tmp_path, None, "2.0", size=512)
    async with evota.engine.begin() as conn:
        await conn.execute(
            insert(Job).values(
                charger_id="Z1",
                firmware_id=fw["id"],
                kind="update",
                state="succeeded",
                target_version="2.0",
                previous_version="1.0",
                created_at=at(4, 0),
                updated_at=at(4, 1),
                finished_at=at(4, 1),
            )
        )
    async with api_client(evota) as admin:
        r = await admin.get("/api/v1/fleet/firmware", params={"days": 7, "vendor": "zed"})
        assert r.status_code == 200, r.text
        days = [_day(r.json(), i) for i in range(7)]
    assert days == [{"1.0": 1}, {"1.0": 1}, {"2.0": 1}] + [{"1.0": 1}] * 4
