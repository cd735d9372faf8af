"""The CLI client commands against a running evota, and their one-line errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from evota.cli import app
from tests.conftest import TOKEN, api_client

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


def _json(output: str) -> Any:
    """The JSON document a --json command printed (the in-process server may log first)."""
    start = min(i for i in (output.find("{\n"), output.find("[\n")) if i >= 0)
    return json.loads(output[start:])


def _lines(output: str) -> list[Any]:
    """The JSON lines a ``watch --json`` printed."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_sites_chargers_files_and_completion(evota_sqlite, tmp_path, monkeypatch):
    rt = evota_sqlite
    assert (await invoke(rt, "site", "add", "Depot", "--id", "depot")).exit_code == 0
    assert (await invoke(rt, "site", "add", "Yard", "--id", "yard")).exit_code == 0
    r = await invoke(rt, "charger", "add", "CLI-7", "--auth-key", "cli-key-0123456789abc")
    assert r.exit_code == 0, r.output
    r = await invoke(rt, "charger", "update", "CLI-7", "--site", "depot", "--tag", "dc", "--json")
    assert r.exit_code == 0, r.output
    assert _json(r.stdout)["site_id"] == "depot" and _json(r.stdout)["tags"] == ["dc"]
    r = await invoke(rt, "charger", "update", "CLI-7")
    assert r.exit_code == 1 and "nothing to change" in r.output
    r = await invoke(rt, "charger", "update", "CLI-7", "--hardware-revision", "r2", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["hardware_revision"] == "r2", r.output
    r = await invoke(rt, "charger", "update", "CLI-7", "--hardware-revision", "x" * 51)
    assert r.exit_code == 1 and "hardware_revision" in r.output
    r = await invoke(rt, "charger", "update", "CLI-7", "--hardware-revision", "", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["hardware_revision"] is None, r.output
    r = await invoke(rt, "charger", "list", "--tag", "dc", "--search", "cli-", "--json")
    assert [c["id"] for c in _json(r.stdout)["items"]] == ["CLI-7"]
    r = await invoke(rt, "charger", "list", "--tag", "ac", "--json")
    assert _json(r.stdout)["total"] == 0

    r = await invoke(rt, "site", "update", "depot", "--timezone", "Europe/Berlin", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["timezone"] == "Europe/Berlin"
    r = await invoke(rt, "site", "show", "depot", "--json")
    assert _json(r.stdout)["chargers"] == 1
    r = await invoke(rt, "site", "delete", "depot")  # a charger stands there
    assert r.exit_code == 1 and "409" in r.output and len(r.output.strip().splitlines()) == 1
    r = await invoke(rt, "site", "delete", "yard")
    assert r.exit_code == 0, r.output
    r = await invoke(rt, "site", "list", "--json")
    assert [s["id"] for s in _json(r.stdout)["items"]] == ["depot"]

    # a diagnostics file, uploaded the way a charger does (to a signed upload URL)
    import time as clock

    from evota.control import uploads

    grant = uploads.UploadGrant("CLI-7", "diagnostics", 1, int(clock.time()) + 600)
    upload_token = uploads.issue(grant, rt.uploads.key)
    async with api_client(rt) as http:
        put = await http.put(f"{uploads.PREFIX}/{upload_token}/diag.log", content=b"hello\n")
        assert put.status_code == 201, put.text
    r = await invoke(rt, "charger", "files", "CLI-7", "--json")
    [listed] = _json(r.stdout)["items"]
    r = await invoke(rt, "file", "list", "--kind", "diagnostics", "--json")
    assert r.exit_code == 0 and [f["id"] for f in _json(r.stdout)["items"]] == [listed["id"]]
    r = await invoke(rt, "file", "list", "--charger", "CLI-7")
    assert r.exit_code == 0 and "diag.log" in r.stdout and "Files (1-1 of 1)" in r.stdout
    target = tmp_path / "got.log"
    r = await invoke(rt, "file", "download", listed["id"], "-o", str(target))
    assert r.exit_code == 0, r.output
    assert target.read_bytes() == b"hello\n"
    r = await invoke(rt, "file", "download", "00000000-0000-0000-0000-000000000000")
    assert r.exit_code == 1 and "404" in r.output

    # shell completion: the script, and charger ids completed from the server. Typer finds
    # the shell among the process's ancestors (shellingham): a run started detached from any
    # shell (nohup in a subshell that exits) found none and failed, so the test says it.
    import shellingham

    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("bash", "/bin/bash"))
    r = runner.invoke(app, ["--show-completion"], prog_name="evota")
    assert r.exit_code == 0 and "complete -o default -F _evota_completion evota" in r.output
    env = {
        **_env(rt),
        "_EVOTA_COMPLETE": "complete_bash",
        "COMP_WORDS": "evota charger show CLI",
        "COMP_CWORD": "3",
    }
    r = await asyncio.to_thread(runner.invoke, app, [], env=env, prog_name="evota")
    assert "CLI-7" in r.output.split(), r.output


async def test_identity_tokens_and_lists(evota_sqlite):
    rt = evota_sqlite
    r = await invoke(rt, "whoami", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["roles"] == ["admin"]
    r = await invoke(rt, "whoami")
    assert r.exit_code == 0 and "admin" in r.stdout
    r = await invoke(rt, "logout")  # an API token is not a login session
    assert r.exit_code == 1 and "403" in r.output and len(r.output.strip().splitlines()) == 1
    for args in (
        ("user", "list", "--role", "viewer", "--json"),
        ("approval", "list", "--state", "", "--action", "campaign.start", "--json"),
        ("audit", "list", "--outcome", "ok", "--offset", "0", "--json"),
        ("alert", "summary", "--json"),
        ("job", "list", "--kind", "rollback", "--json"),
        ("campaign", "list", "--state", "draft", "--json"),
        ("operation", "list", "--command", "reset", "--json"),
        ("profile", "list", "--name", "x", "--json"),
        ("firmware", "list", "--version", "9.9", "--json"),
    ):
        r = await invoke(rt, *args)
        assert r.exit_code == 0, (args, r.output)
        page = _json(r.stdout)
        assert "open" in page if args[0] == "alert" else page["items"] == [], (args, page)
    r = await invoke(rt, "job", "list", "--state", "warped")
    assert r.exit_code == 1 and "422" in r.output and "state" in r.output


async def test_watch_draws_progress_bars_and_streams_json(evota_sqlite):
    rt = evota_sqlite
    for i in range(3):
        r = await invoke(rt, "charger", "add", f"W-{i}", "--auth-key", "watch-key-0123456789")
        assert r.exit_code == 0, r.output
    r = await invoke(
        rt, "operation", "create", "clear-cache", "--reason", "cli test",
        "--charger", "W-0", "--charger", "W-1", "--charger", "W-2", "--stage", "1", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    op_id = _json(r.stdout)["id"]
    r = await invoke(rt, "operation", "watch", op_id, "--interval", "0.2")
    assert r.exit_code == 0, r.output
    assert "━" in r.stdout and "3/3" in r.stdout  # bars, and every offline charger ended
    assert _lines(r.stdout)[-1]["state"] in ("completed", "stopped")
    r = await invoke(rt, "operation", "watch", op_id, "--json", "--interval", "0.2")
    docs = _lines(r.stdout)
    assert r.exit_code == 0 and docs and docs[-1]["id"] == op_id
    assert sum(docs[-1]["progress"].values()) == 3 and not docs[-1]["progress"]["pending"]

    r = await invoke(rt, "profile", "create", "hb", "--set", "HeartbeatInterval=300", "--charger",
                     "W-0")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = await invoke(rt, "profile", "update", "hb", "--set", "HeartbeatInterval=60", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["settings"] == {"HeartbeatInterval": "60"}
    r = await invoke(rt, "profile", "delete", "hb")
    assert r.exit_code == 0 and "deleted" in r.stdout
    r = await invoke(rt, "profile", "show", "hb")
    assert r.exit_code == 1 and "no configuration profile" in r.output

    # a campaign: its watch view has a bar per wave and one overall
    async with api_client(rt) as http:
        r = await http.put("/api/v1/firmware/vendors/Evota", json={"allow_unsigned": True})
        assert r.status_code == 200, r.text
        r = await http.post(
            "/api/v1/firmware",
            data={"vendor": "Evota", "version": "1.0.0", "models": ["M"]},
            files={"file": ("fw.bin", b"firmware bytes")},
        )
        assert r.status_code == 201, r.text
    r = await invoke(rt, "campaign", "create", "--name", "c", "--firmware", "1.0.0", "--json")
    assert r.exit_code == 0, r.output
    campaign = _json(r.stdout)
    r = await invoke(rt, "campaign", "abort", campaign["id"], "--reason", "test", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["state"] == "aborted"
    r = await invoke(rt, "campaign", "watch", campaign["id"])
    assert r.exit_code == 0 and "overall" in r.stdout and "━" in r.stdout, r.stdout
    assert _lines(r.stdout)[-1]["state"] == "aborted"
    r = await invoke(rt, "campaign", "watch", campaign["id"], "--json")
    assert [d["state"] for d in _lines(r.stdout)] == ["aborted"]


def test_db_status_and_upgrade(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    r = runner.invoke(app, ["db", "status", "--database-url", url, "--json"])
    assert r.exit_code == 0, r.output
    empty = json.loads(r.stdout)
    assert empty["revision"] is None and empty["state"] == "behind" and empty["head"]
    r = runner.invoke(app, ["db", "upgrade", "--database-url", url, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"before": None, "after": empty["head"]}
    r = runner.invoke(app, ["db", "status", "--database-url", url])
    assert r.exit_code == 0 and "current" in r.stdout
    r = runner.invoke(app, ["db", "status", "--data-dir", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no database" in r.output
