"""Repository queries (on every database backend), the root check, and the temp-file sweep."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from evota.firmware import repository as repo
from evota.firmware import signing
from evota.firmware.storage import LocalFirmwareStore
from evota.store import db

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_inspect_root_certificate():
    _, ca = signing.generate_ca("Root", "Acme", days=10)
    info = repo.inspect_root_certificate(ca.decode(), NOW)
    assert len(info.fingerprint) == 64 and "CN=Root" in info.subject
    with pytest.raises(repo.InvalidInput, match="expired"):
        repo.inspect_root_certificate(ca.decode(), info.not_after + dt.timedelta(seconds=1))
    _, self_signed = signing.generate_signing_key("Signer", "Acme")  # pinned signer
    assert repo.inspect_root_certificate(self_signed.decode(), NOW).subject
    with pytest.raises(repo.InvalidInput, match="not a PEM"):
        repo.inspect_root_certificate("\udcff not pem", NOW)


async def test_queries(database_url, tmp_path):
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    try:
        new = repo.NewFirmware(vendor="Acme", version="1.0", sha256="a" * 64, size=3)
        first = await repo.add_firmware(engine, new, NOW)
        assert first.models == () and first.state == "draft"
        assert await repo.get_firmware(engine, first.id) == first
        assert await repo.get_firmware(engine, "nope") is None
        with pytest.raises(repo.Conflict):
            await repo.add_firmware(engine, repo.NewFirmware("ACME", "1.0", "b" * 64, 1), NOW)
        other = await repo.add_firmware(
            engine, repo.NewFirmware("Volt", "1.0", "a" * 64, 3, models=["V"]), NOW
        )
        assert await repo.find_firmware(engine, other.id, None) == other
        assert await repo.find_firmware(engine, "1.0", "volt") == other
        assert await repo.find_firmware(engine, "2.0", "Acme") is None
        with pytest.raises(repo.AmbiguousFirmware):
            await repo.find_firmware(engine, "1.0", None)
        assert await repo.sha256_in_use(engine, "a" * 64)
        assert not await repo.sha256_in_use(engine, "c" * 64)
        records, total = await repo.list_firmware(engine, model="V", limit=10)
        assert total == 2 and {r.id for r in records} == {first.id, other.id}  # [] is any
        moved = await repo.set_state(engine, first.id, "released", "ok", NOW)
        assert (moved.state, moved.state_reason) == ("released", "ok")
        with pytest.raises(repo.Conflict):
            await repo.set_state(engine, first.id, "pilot", None, NOW)
        with pytest.raises(repo.NotFound):
            await repo.set_state(engine, "nope", "pilot", None, NOW)
        assert not await repo.allows_unsigned(engine, "acme")
        await repo.set_vendor_policy(engine, "Acme", True, NOW)
        assert await repo.allows_unsigned(engine, "ACME")
        assert [p.vendor for p in await repo.list_vendor_policies(engine)] == ["Acme"]
    finally:
        await engine.dispose()


def test_sweep_temp_removes_leftovers(tmp_path: Path):
    store = LocalFirmwareStore(tmp_path / "fw")
    old = store.tmp_dir / "upload-old.part"
    fresh = store.tmp_dir / "upload-fresh.part"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    past = time.time() - 3600
    os.utime(old, (past, past))
    (store.tmp_dir / "subdir").mkdir()
    assert store.sweep_temp(older_than_seconds=60) == 1
    assert not old.exists() and fresh.exists()
    assert store.sweep_temp() == 1
    assert [p.name for p in store.tmp_dir.iterdir()] == ["subdir"]
    assert store.sweep_temp() == 0
