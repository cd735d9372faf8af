"""The CLI client commands against a running evota, and their one-line errors."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from evota.cli import app
from tests.conftest import TOKEN

runner = CliRunner()


def _env(runtime, token=TOKEN):
    return {"EVOTA_URL": f"http://127.0.0.1:{runtime.http_port}", "EVOTA_TOKEN": token}


async def invoke(runtime, *args, token=TOKEN):
    return await asyncio.to_thread(runner.invoke, app, list(args), env=_env(runtime, token))


async def test_site_and_charger_workflow(evota_sqlite):
    r = await invoke(
        evota_sqlite,
        "site",
        "add",
        "Depot",
        "--id",
        "depot",
        "--timezone",
        "America/New_York",
        "--region",
        "US-East",
    )
    assert r.exit_code == 0, r.output
    r = await invoke(evota_sqlite, "site", "list", "--json")
    assert [s["id"] for s in json.loads(r.stdout)["items"]] == ["depot"]
    r = await invoke(
        evota_sqlite,
        "charger",
        "add",
        "CLI-1",
        "--auth-key",
        "cli-key-0123456789abc",
        "--site",
        "depot",
        "--tag",
        "dc",
    )
    assert r.exit_code == 0, r.output
    r = await invoke(evota_sqlite, "charger", "list", "--json", "--site", "depot")
    page = json.loads(r.stdout)
    assert page["total"] == 1 and page["items"][0]["tags"] == ["dc"]
    r = await invoke(evota_sqlite, "charger", "show", "CLI-1")
    assert r.exit_code == 0 and "CLI-1" in r.stdout
    r = await invoke(evota_sqlite, "charger", "list")
    assert r.exit_code == 0 and "CLI-1" in r.stdout


async def test_errors_are_one_line_and_nonzero(evota_sqlite):
    r = await invoke(evota_sqlite, "site", "add", "X", "--timezone", "Mars/Olympus")
    assert r.exit_code == 1
    assert "timezone" in r.output and len(r.output.strip().splitlines()) == 1
    r = await invoke(evota_sqlite, "charger", "show", "NOPE")
    assert r.exit_code == 1 and "404" in r.output
    r = await invoke(evota_sqlite, "charger", "reset", "NOPE")
    assert r.exit_code == 1
    r = await invoke(evota_sqlite, "charger", "list", token="wrong-token")
    assert r.exit_code == 1 and "401" in r.output


def test_missing_token_and_unreachable_server():
    r = runner.invoke(app, ["charger", "list"], env={"EVOTA_TOKEN": ""})
    assert r.exit_code == 1 and "token" in r.output
    r = runner.invoke(
        app, ["charger", "list"], env={"EVOTA_URL": "http://127.0.0.1:9", "EVOTA_TOKEN": "x"}
    )
    assert r.exit_code == 1 and "cannot reach" in r.output


def test_serve_rejects_bad_settings():
    r = runner.invoke(app, ["serve", "--registration", "everyone", "--data-dir", "/tmp/x"])
    assert r.exit_code == 1 and "registration" in r.output
