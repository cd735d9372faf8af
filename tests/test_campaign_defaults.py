"""``EVOTA_CAMPAIGN_DEFAULTS``: the policy a campaign created without those fields takes, the
same in the API, the CLI (which sends only what it is given) and the console wizard; checked
at start with one clear line; unset, the product's defaults (what `evota serve` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from evota.cli import app
from tests.conftest import Keys, api_client, session_for, start_runtime
from tests.test_firmware_update import trust, upload

DEMO_LIKE = {"soak_seconds": 20, "health_window_seconds": 20, "success_threshold": 0.5}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "invalid setting EVOTA_CAMPAIGN_DEFAULTS: not valid JSON"),
        ('{"soak": 20}', "policy field soak: unknown field"),
        ('{"success_threshold": 2}', "policy field success_threshold: must be a number in [0, 1]"),
        ('{"auto_stop": [{"action": "explode"}]}', "policy field auto_stop[0].min_executed"),
    ],
)
def test_a_bad_value_stops_the_start_with_one_line(tmp_path: Path, value: str, message: str):
    r = CliRunner().invoke(
        app, ["serve", "--data-dir", str(tmp_path)], env={"EVOTA_CAMPAIGN_DEFAULTS": value}
    )
    assert r.exit_code == 1
    assert message in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        ({}, {"soak_seconds": 3600, "health_window_seconds": 3600, "success_threshold": 0.95}),
        (DEMO_LIKE, DEMO_LIKE),
    ],
    ids=["product", "demo"],
)
async def test_campaigns_and_the_wizard_start_from_the_servers_defaults(
    tmp_path: Path, sqlite_url: str, keys: Keys, defaults: dict, expected: dict
):
    rt = await start_runtime(tmp_path, sqlite_url, campaign_defaults=defaults)
    api = api_client(rt)
    try:
        await trust(api, keys)
        fw = await upload(api, tmp_path, keys, "2.0.0", size=1024, state="released")
        made = {}
        for name, policy in (("none", None), ("own", {"soak_seconds": 7})):
            body: dict = {"name": name, "firmware_id": fw["id"]}
            if policy is not None:
                body["policy"] = policy
            r = await api.post("/api/v1/campaigns", json=body)
            assert r.status_code == 201, r.text
            made[name] = r.json()["policy"]
        assert {k: made["none"][k] for k in expected} == expected
        assert made["own"]["soak_seconds"] == 7  # a field the campaign gives wins
        assert made["own"]["success_threshold"] == expected["success_threshold"]

        api.cookies.set("evota_session", await session_for(rt, "wanda", ["firmware_manager"]))
        page = await api.get("/console/campaigns/new")
        assert page.status_code == 200
        for field_id, key in (("c-soak", "soak_seconds"), ("c-threshold", "success_threshold")):
            html = f'id="{field_id}" name="policy.{key}" type="number" value="{expected[key]}"'
            assert html in page.text, key
    finally:
        await api.aclose()
        await rt.stop()
