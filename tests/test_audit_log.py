"""The audit log end to end: what gets recorded, filters and exports, and tampering in the
database (edit, delete, reorder) detected at the right entry by the API and by the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from evota.cli import app as cli_app
from evota.runtime import Runtime
from evota.store.models import AuditEntry
from tests.conftest import TOKEN, api_client, session_for, start_runtime

runner = CliRunner()


async def _some_history(rt: Runtime, n: int = 6) -> None:
    async with api_client(rt) as admin:
        for i in range(n):
            res = await admin.post(
                "/api/v1/sites",
                json={"id": f"s{i}", "name": f"Site {i}", "timezone": "UTC"},
                headers={"X-Request-ID": f"req-{i}"},
            )
            assert res.status_code == 201
            assert res.headers["x-request-id"] == f"req-{i}"
        res = await admin.post("/api/v1/sites", json={"id": "bad id!", "name": "x"})
        assert res.status_code == 422


async def test_state_changing_calls_are_recorded_with_who_what_and_outcome(
    tmp_path: Path, database_url: str
) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        await _some_history(rt)
        auditor = await session_for(rt, "audrey", ["auditor"])
        async with api_client(rt, auditor) as api:
            page = (await api.get("/api/v1/audit", params={"action": "api"})).json()
            assert page["total"] == 7
            newest = page["items"][0]
            assert newest["actor"] == "bootstrap-admin"
            assert newest["outcome"] == "http_422"
            first = page["items"][-1]
            assert first["action"] == "api.create_site" and first["outcome"] == "ok"
            assert first["request_id"] == "req-0"
            assert first["detail"]["path"] == "/api/v1/sites"
            verified = (await api.get("/api/v1/audit/verify")).json()
            assert verified == {
                "ok": True,
                "entries": verified["entries"],
                "broken_at": None,
                "reason": None,
                "detail": None,
            }
            assert verified["entries"] >= 7
            # reads are not audited, and an anonymous failure is
            async with api_client(rt, None) as anon:
                assert (await anon.post("/api/v1/sites", json={})).status_code == 401
            page = (await api.get("/api/v1/audit", params={"actor": "anonymous"})).json()
            assert page["items"][0]["outcome"] == "http_401"
    finally:
        await rt.stop()


async def test_export_jsonl_and_csv_reverify(tmp_path: Path, sqlite_url: str) -> None:
    from evota.audit import chain

    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        await _some_history(rt, 3)
        async with api_client(rt) as admin:
            jsonl = (await admin.get("/api/v1/audit/export", params={"format": "jsonl"})).text
            rows = [json.loads(line) for line in jsonl.splitlines()]
            entries = [
                chain.Entry(
                    **{
                        k: v
                        for k, v in r.items()
                        if k not in ("chargers",) and k in chain.Entry.__dataclass_fields__
                    }
                    | {"at": __import__("datetime").datetime.fromisoformat(r["at"])}
                )
                for r in rows
            ]
            assert chain.verify(entries) == (len(rows), None)  # an export can be re-verified
            text = (await admin.get("/api/v1/audit/export", params={"format": "csv"})).text
            table = list(csv.DictReader(io.StringIO(text)))
            assert [int(r["seq"]) for r in table] == [r["seq"] for r in rows]
            bad = await admin.get("/api/v1/audit/export", params={"format": "xml"})
            assert bad.status_code == 422 and bad.json()["field"] == "format"
    finally:
        await rt.stop()


async def _tamper(rt: Runtime, how: str) -> int:
    """Change the database behind evota's back; returns the seq the break should name."""
    async with rt.engine.begin() as conn:
        if how == "edit":
            await conn.execute(
                update(AuditEntry).where(AuditEntry.seq == 3).values(actor="someone-else")
            )
            return 3
        if how == "edit-detail":
            await conn.execute(
                update(AuditEntry).where(AuditEntry.seq == 4).values(detail={"status": 200})
            )
            return 4
        if how == "delete":
            await conn.execute(delete(AuditEntry).where(AuditEntry.seq == 2))
            return 2
        if how == "reorder":  # swap the positions of entries 3 and 4
            await conn.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(seq=-3))
            await conn.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(seq=3))
            await conn.execute(update(AuditEntry).where(AuditEntry.seq == -3).values(seq=4))
            return 3  # the first entry not where the chain expects it
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("edit", "edited"),
        ("edit-detail", "edited"),
        ("delete", "missing"),
        ("reorder", "reordered"),
    ],
)
async def test_tampering_is_detected_at_the_right_entry(
    tmp_path: Path, database_url: str, how: str, reason: str
) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        await _some_history(rt)
        async with api_client(rt) as admin:
            assert (await admin.get("/api/v1/audit/verify")).json()["ok"] is True
            expected = await _tamper(rt, how)
            res = (await admin.get("/api/v1/audit/verify")).json()
        assert res["ok"] is False
        assert res["broken_at"] == expected, res
        assert res["reason"] == reason
        # the CLI, straight against the database (no server trusted)
        args = ["audit", "verify", "--database-url", rt.settings.resolved_database_url()]
        result = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert result.exit_code == 1
        assert f"broken at entry {expected} ({reason})" in result.output
        # and through the API
        url = f"http://127.0.0.1:{rt.http_port}"
        args = ["audit", "verify", "--url", url, "--token", TOKEN]
        result = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert result.exit_code == 1 and f"entry {expected}" in result.output
    finally:
        await rt.stop()


async def test_cli_verify_list_and_export(tmp_path: Path) -> None:
    # the database where `evota serve --data-dir` keeps it, so --data-dir finds it
    (tmp_path / "data").mkdir()
    rt = await start_runtime(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'data' / 'evota.db'}")
    try:
        await _some_history(rt, 2)
        url = f"http://127.0.0.1:{rt.http_port}"
        args = ["audit", "verify", "--data-dir", str(rt.settings.data_dir)]
        ok = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert ok.exit_code == 0 and "audit log intact" in ok.output, ok.output
        listed = await asyncio.to_thread(
            runner.invoke,
            cli_app,
            ["audit", "list", "--url", url, "--token", TOKEN, "--json", "--limit", "5"],
        )
        assert listed.exit_code == 0
        assert json.loads(listed.output)["items"][0]["action"].startswith("api.")
        out = tmp_path / "audit.csv"
        exported = await asyncio.to_thread(
            runner.invoke,
            cli_app,
            ["audit", "export", "--url", url, "--token", TOKEN, "--format", "csv", "-o", str(out)],
        )
        assert exported.exit_code == 0 and out.read_text().startswith("seq,at,actor")
        args = ["audit", "verify", "--data-dir", str(tmp_path / "nowhere")]
        bad = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert bad.exit_code == 1 and "no evota database" in bad.output
    finally:
        await rt.stop()


async def test_appends_from_many_tasks_keep_one_chain(tmp_path: Path, database_url: str) -> None:
    """Concurrent callers are group-committed: one chain, every entry linked to its own
    chargers, each caller told its own sequence number."""
    from evota.audit.log import Actor
    from evota.store.models import AuditCharger

    rt = await start_runtime(tmp_path, database_url)
    try:
        before, _ = await rt.audit.verify()
        seqs = await asyncio.gather(
            *(
                rt.audit.record(
                    Actor(f"a{i}", ("operator",)), "test.x", "ok", chargers=[f"C{i}", f"D{i}"]
                )
                for i in range(120)
            )
        )
        assert sorted(seqs) == list(range(before + 1, before + 121))
        count, broken = await rt.audit.verify()
        assert broken is None and count == before + 120
        async with rt.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(AuditEntry.seq, AuditEntry.actor, AuditCharger.charger_id).join(
                        AuditCharger, AuditCharger.entry_id == AuditEntry.id
                    )
                )
            ).all()
        links: dict[str, set[str]] = {}
        for row in rows:
            links.setdefault(row.actor, set()).add(row.charger_id)
        assert links == {f"a{i}": {f"C{i}", f"D{i}"} for i in range(120)}
        by_actor = {row.actor: row.seq for row in rows}
        assert [by_actor[f"a{i}"] for i in range(120)] == seqs  # in call order
    finally:
        await rt.stop()
