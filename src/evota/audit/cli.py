"""``evota audit list|verify|export``: read and check the audit log.

``verify`` can run against the API (``--url``/``--token``, permission ``audit.read``) or
straight against the database (``--data-dir`` or ``--database-url``), which needs no running
server and does not trust one: the check an auditor runs on a copy of the database.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from evota.cli_support import (
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    TokenOpt,
    UrlOpt,
    api,
    client,
    err,
    fail,
    out,
    print_json,
    query,
)
from evota.client import ApiError

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="check this data directory's database directly")
]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="check this database directly (SQLAlchemy URL)")
]


async def _verify_db(url: str, data_dir: Path) -> dict[str, Any]:
    from evota.audit.chain import explain
    from evota.audit.log import AuditLog
    from evota.clock import SystemClock
    from evota.store import db

    engine = db.create_engine(url)
    try:
        audit, _ = AuditLog.for_data_dir(engine, SystemClock(), data_dir)
        count, broken = await audit.verify()
    finally:
        await engine.dispose()
    checked = audit.head_checked
    if broken is None:
        return {"ok": True, "entries": count, "head_checked": checked}
    return {
        "ok": False,
        "entries": count,
        "broken_at": broken.seq,
        "reason": broken.reason,
        "detail": explain(broken),
        "head_checked": checked,
    }


_CHAIN_REASONS = ("edited", "missing", "reordered", "bad_start")


@app.command()
def verify(
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the hash chain and compare its end with the sealed head and the latest anchor;
    exit 1 naming the first edited, missing, reordered or unlinked entry, or a truncation.

    Straight against the database, the head key and anchor file are read from --data-dir
    (else EVOTA_DATA_DIR); without the key only the chain is checked, and it says so."""
    if data_dir is not None or database_url is not None:
        if database_url is not None:
            db_url = database_url
        else:
            assert data_dir is not None
            if not (data_dir / "evota.db").exists():
                raise fail(f"no evota database in {data_dir}")
            db_url = f"sqlite+aiosqlite:///{(data_dir / 'evota.db').resolve()}"
        try:
            if data_dir is None:
                from evota.config import Settings

                data_dir = Settings.model_validate({}).data_dir
            result = asyncio.run(_verify_db(db_url, data_dir))
        except Exception as exc:  # unreachable database, not an evota database, ...
            raise fail(f"cannot read the audit log: {exc}") from None
    else:
        result = api(url, token, "GET", "/api/v1/audit/verify")
    if as_json:
        print_json(result)
    if not result.get("head_checked", True) and not as_json:
        err.print(
            "[yellow]head not checked: no audit-head.key in the data directory; deleting the "
            "newest entries would go unnoticed (pass --data-dir)[/yellow]"
        )
    if result["ok"]:
        if not as_json:
            out.print(f"audit log intact: {result['entries']} entries verified")
        return
    if not as_json:
        if result["reason"] in _CHAIN_REASONS:
            message = f"audit log broken at entry {result['broken_at']} ({result['reason']})"
        else:
            detail = str(result["detail"])
            message = detail if detail.startswith("audit log") else f"audit log broken: {detail}"
        raise fail(f"{message}; {result['entries']} entries read")
    raise typer.Exit(1)


def _db_target(data_dir: Path | None, database_url: str | None) -> tuple[str, Path]:
    """The database URL and data directory (for the head key) a direct command works on."""
    if database_url is not None:
        db_url = database_url
    elif data_dir is not None:
        if not (data_dir / "evota.db").exists():
            raise fail(f"no evota database in {data_dir}")
        db_url = f"sqlite+aiosqlite:///{(data_dir / 'evota.db').resolve()}"
    else:
        raise fail("pass --data-dir or --database-url")
    if data_dir is None:
        from evota.config import Settings

        data_dir = Settings.model_validate({}).data_dir
    return db_url, data_dir


async def _archive_db(
    url: str, data_dir: Path, output: Path, older_than_days: float
) -> dict[str, Any]:
    from datetime import timedelta

    from evota.audit.archive import archive
    from evota.audit.log import AuditLog
    from evota.clock import SystemClock
    from evota.store import db

    engine = db.create_engine(url)
    try:
        audit, _ = AuditLog.for_data_dir(engine, SystemClock(), data_dir)
        done = await archive(
            audit, output, before=audit.clock.now() - timedelta(days=older_than_days)
        )
    finally:
        await engine.dispose()
    if done is None:
        return {"archived": 0}
    cp = done.checkpoint
    return {
        "archived": done.entries,
        "deleted": done.deleted,
        "first": cp.prev_seq + 1,
        "last": cp.seq,
        "archive": str(done.path),
    }


@app.command()
def archive(
    older_than_days: Annotated[
        float, typer.Option("--older-than-days", help="archive entries older than this")
    ],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="where archives go (default DATA_DIR/audit-archive)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive the oldest entries to a file, check it, then prune them from the database,
    leaving a checkpoint signed with the head key (needs audit-head.key in --data-dir).
    Runs straight against the database, beside a running server."""
    if older_than_days < 0:
        raise fail("--older-than-days must be 0 or more")
    from evota.audit.archive import ARCHIVE_DIR, ArchiveError

    db_url, key_dir = _db_target(data_dir, database_url)
    try:
        result = asyncio.run(
            _archive_db(db_url, key_dir, output_dir or key_dir / ARCHIVE_DIR, older_than_days)
        )
    except ArchiveError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # unreachable database, not an evota database, ...
        raise fail(f"cannot archive the audit log: {exc}") from None
    if as_json:
        print_json(result)
    elif result["archived"]:
        out.print(
            f"archived entries {result['first']}-{result['last']} to {result['archive']} "
            f"and pruned {result['deleted']}"
        )
    else:
        out.print("nothing to archive")


async def _checkpoints(url: str) -> list[Any]:
    from evota.audit.log import AuditLog
    from evota.clock import SystemClock
    from evota.store import db

    engine = db.create_engine(url)
    try:
        return await AuditLog(engine, SystemClock()).checkpoints()
    finally:
        await engine.dispose()


@app.command("verify-archive")
def verify_archive(
    path: Annotated[Path, typer.Argument(help="an archive file written by evota audit archive")],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an archive on its own: its entries' chain, its end against its checkpoint and
    the checkpoint's signature (with audit-head.key from --data-dir, else EVOTA_DATA_DIR).
    With a database (--database-url, or the data directory's evota.db) also check that the
    database holds the same checkpoint: the link from the archive to the remaining chain."""
    from evota.audit import archive_format
    from evota.audit.log import head_key

    if database_url is None and data_dir is not None and (data_dir / "evota.db").exists():
        database_url = f"sqlite+aiosqlite:///{(data_dir / 'evota.db').resolve()}"
    if data_dir is None:
        from evota.config import Settings

        data_dir = Settings.model_validate({}).data_dir
    try:
        data = path.read_bytes()
        key, _ = head_key(data_dir)
    except (OSError, RuntimeError) as exc:
        raise fail(f"cannot read: {exc}") from None
    checked = archive_format.check(data, key)
    cp = checked.checkpoint
    if checked.problem is None and cp is not None and database_url is not None:
        try:
            stored = asyncio.run(_checkpoints(database_url))
        except Exception as exc:  # unreachable database, not an evota database, ...
            raise fail(f"cannot read the checkpoints: {exc}") from None
        if cp not in stored:
            checked = archive_format.Checked(
                checked.entries, cp, "its checkpoint is not in the database", checked.signed
            )
    result = {
        "ok": checked.problem is None,
        "entries": checked.entries,
        "signature_checked": checked.signed,
        "problem": checked.problem,
        "checkpoint": None if cp is None else {"seq": cp.seq, "hash": cp.hash},
    }
    if as_json:
        print_json(result)
    if not checked.signed and not as_json:
        err.print("[yellow]signature not checked: no audit-head.key (pass --data-dir)[/yellow]")
    if checked.problem is not None:
        if as_json:
            raise typer.Exit(1)
        raise fail(f"archive {path.name}: {checked.problem}")
    if not as_json:
        assert cp is not None
        out.print(
            f"archive intact: entries {cp.prev_seq + 1}-{cp.seq} ({checked.entries}), "
            f"ends at checkpoint {cp.seq}"
        )


@app.command("list")
def list_entries(
    url: UrlOpt = None,
    token: TokenOpt = None,
    charger: Annotated[str | None, typer.Option(help="charger id")] = None,
    actor: Annotated[str | None, typer.Option(help="operator or token name")] = None,
    action: Annotated[str | None, typer.Option(help="action or prefix, e.g. command")] = None,
    outcome: Annotated[str | None, typer.Option(help="e.g. ok, failed, http_403")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time (UTC if no offset)")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time, exclusive")] = None,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Newest entries first."""
    params = query(
        charger=charger,
        actor=actor,
        action=action,
        outcome=outcome,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    page = api(url, token, "GET", "/api/v1/audit", params=params)
    if as_json:
        print_json(page)
        return
    table = Table("seq", "at", "actor", "action", "chargers", "outcome", "reason")
    for e in page["items"]:
        chargers = ",".join(e["chargers"][:3]) + ("…" if len(e["chargers"]) > 3 else "")
        table.add_row(
            str(e["seq"]),
            str(e["at"])[:19],
            e["actor"],
            e["action"],
            chargers,
            e["outcome"],
            e["reason"] or "",
        )
    out.print(table)
    out.print(f"{len(page['items'])} of {page['total']}")


@app.command()
def export(
    url: UrlOpt = None,
    token: TokenOpt = None,
    format: Annotated[str, typer.Option(help="jsonl or csv")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file (default stdout)")
    ] = None,
    charger: Annotated[str | None, typer.Option(help="charger id")] = None,
    actor: Annotated[str | None, typer.Option(help="operator or token name")] = None,
    action: Annotated[str | None, typer.Option(help="action or prefix")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time")] = None,
) -> None:
    """Export entries oldest first as JSON Lines or CSV (with hashes, for re-verification)."""
    if format not in ("jsonl", "csv"):
        raise fail("--format must be jsonl or csv")
    params = {
        k: v
        for k, v in {
            "format": format,
            "charger": charger,
            "actor": actor,
            "action": action,
            "since": since,
            "until": until,
        }.items()
        if v is not None
    }
    try:
        body = client(url, token).raw("GET", "/api/v1/audit/export", params=params)
    except ApiError as exc:
        raise fail(str(exc)) from None
    if output is None:
        sys.stdout.buffer.write(body)
    else:
        output.write_bytes(body)
        out.print(f"wrote {len(body)} bytes to {output}")
