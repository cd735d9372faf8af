"""End to end through the simulator (issue 13 §3): a small fleet updated by a campaign shows
in the new version's scorecard (where it runs, the campaign that shipped it, its predecessor)
and in the fleet's firmware picture (today's versions, nobody behind any more)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from evota.store.models import ChargerEvent

from ..conftest import Keys
from ..test_campaigns import World, fleet_spec
from ..test_firmware_update import MODEL, VENDOR, running, upload


async def test_a_campaign_shows_in_the_scorecard_and_the_fleet_picture(
    tmp_path: Path, sqlite_url: str, keys: Keys
) -> None:
    async with running(World, tmp_path, sqlite_url, keys, campaign_tick_seconds=0.2) as w:
        old = await upload(w.api, w.tmp_path, w.keys, "1.0.0", size=16 * 1024, state="released")
        new = await upload(w.api, w.tmp_path, w.keys, "2.0.0", size=16 * 1024, state="pilot")
        fleet = await w.fleet(fleet_spec(6, w.keys), session_rate=0.0)
        ids = {c.identity for c in fleet.chargers}

        before = (await w.api.get("/api/v1/fleet/firmware/behind")).json()
        assert before["behind"] == 0  # 1.0.0 is the newest *released* version
        r = await w.api.post(f"/api/v1/firmware/{new['id']}/state", json={"state": "released"})
        assert r.status_code == 200, r.text
        before = (await w.api.get("/api/v1/fleet/firmware/behind")).json()
        assert before["behind"] == 6 and before["items"][0]["releases_behind"] == 1

        c = await w.campaign(new["id"], waves=[{"count": 2}, {"percent": 100}])
        r = await w.api.post(f"/api/v1/campaigns/{c['id']}/start", json={"reason": "e2e"})
        assert r.status_code == 200, r.text
        done = await w.until(c["id"], lambda c: c["state"] in ("completed", "paused", "aborted"))
        assert done["state"] == "completed", done
        assert {ch.firmware_version for ch in fleet.chargers} == {"2.0.0"}

        card = (await w.api.get(f"/api/v1/firmware/{new['id']}/scorecard")).json()
        assert card["running"]["total"] == 6
        assert card["running"]["by_model"] == [{"model": MODEL, "chargers": 6}]
        assert card["incidents"]["update_jobs"] == {"succeeded": 6}
        assert card["incidents"]["failed_by_reason"] == []
        assert [(x["id"], x["state"], x["jobs"]) for x in card["campaigns"]] == [
            (c["id"], "completed", {"succeeded": 6})
        ]
        assert card["predecessor"]["id"] == old["id"]
        gone = (await w.api.get(f"/api/v1/firmware/{old['id']}/scorecard")).json()
        assert gone["running"]["total"] == 0

        history = (await w.api.get("/api/v1/fleet/firmware", params={"days": 3})).json()
        today = history["items"][-1]
        assert today["versions"] == [{"vendor": VENDOR, "version": "2.0.0", "chargers": 6}]
        assert today["fragmentation"] == 0.0
        assert all(d["chargers"] <= 6 for d in history["items"])  # from their creation on
        # the history was rebuilt from the boots the chargers sent: 1.0.0, then 2.0.0
        async with w.rt.engine.connect() as conn:
            boots = (
                await conn.execute(
                    select(func.count(func.distinct(ChargerEvent.charger_id))).where(
                        ChargerEvent.kind == "boot", ChargerEvent.charger_id.in_(ids)
                    )
                )
            ).scalar()
        assert boots == 6
        after = (await w.api.get("/api/v1/fleet/firmware/behind")).json()
        assert after["behind"] == 0 and after["items"] == []
