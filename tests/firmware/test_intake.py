"""Firmware intake on its own: the judgement and trust policy raise domain errors (no HTTP),
and a refused upload's blob is removed unless an image references it."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evota.firmware import intake
from evota.firmware import repository as repo
from evota.firmware.intake import IntakeError, Refusal, Submission
from evota.firmware.storage import LocalFirmwareStore
from evota.store import db

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_refusals_are_domain_errors_and_refused_blobs_go(database_url, tmp_path: Path):
    engine = db.create_engine(database_url)
    await db.migrate(engine)
    store = LocalFirmwareStore(tmp_path / "fw")
    try:
        blob = await store.put(_chunks(b"image 1.0"), max_bytes=1000)
        plain = Submission("Acme", "1.0", ["M1"], filename="fw.bin")
        with pytest.raises(IntakeError) as exc:  # unsigned, and the vendor does not allow it
            await intake.accept(engine, store, plain, blob, NOW)
        assert (exc.value.refusal, exc.value.field) == (Refusal.UNSIGNED, "signature")
        assert not hasattr(exc.value, "status") and not hasattr(exc.value, "http_status")
        halves = (
            (Submission("Acme", "1.0", ["M1"], signature="AAAA"), "signing_certificate"),
            (Submission("Acme", "1.0", ["M1"], signing_certificate="PEM"), "signature"),
        )
        for half, field in halves:
            with pytest.raises(IntakeError) as exc:
                await intake.accept(engine, store, half, blob, NOW)
            assert (exc.value.refusal, exc.value.field) == (Refusal.INCOMPLETE_SIGNATURE, field)

        await repo.set_vendor_policy(engine, "Acme", True, NOW)
        record = await intake.accept(engine, store, plain, blob, NOW)
        assert (record.vendor, record.version, record.filename) == ("Acme", "1.0", "fw.bin")
        with pytest.raises(IntakeError) as exc:
            await intake.accept(engine, store, plain, blob, NOW)
        assert exc.value.refusal == Refusal.EXISTS

        empty = await store.put(_chunks(b""), max_bytes=1000)
        with pytest.raises(IntakeError) as exc:
            await intake.accept(engine, store, Submission("Acme", "2.0", ["M1"]), empty, NOW)
        assert exc.value.refusal == Refusal.EMPTY_FILE
        await intake.discard(engine, store, empty)
        assert not await store.exists(empty.sha256)
        await intake.discard(engine, store, blob)  # referenced by the image: kept
        assert await store.exists(blob.sha256)
    finally:
        await engine.dispose()
