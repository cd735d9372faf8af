"""The vendor profiles' in-memory view on a real database: what a charger boots with decides
its profile, and a charger that boots with endless new versions cannot grow memory."""

from __future__ import annotations

from evota.clock import SystemClock
from evota.fleet import vendors
from evota.fleet.vendor_store import MAX_MEMO, VendorStore
from evota.store import db


async def test_boots_decide_the_profile_and_memory_stays_bounded(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url)
    try:
        await db.migrate(engine)
        store = VendorStore(engine, SystemClock())
        await store.load()
        ranged = vendors.validate({"vendor": "Acme", "firmware_min": "2.0"})
        await store.create(ranged, "test")
        assert store.for_charger("CP-1") is vendors.DEFAULT  # never booted
        store.charger_booted("CP-1", "ACME", "AC22", "1.0")
        assert store.for_charger("CP-1") is vendors.DEFAULT
        store.charger_booted("CP-1", "ACME", "AC22", "2.1")
        assert store.for_charger("CP-1") == ranged
        store.charger_booted("CP-1", "ACME", "AC22", None)  # no version: keeps the last one
        assert store.identity("CP-1") == ("ACME", "AC22", "2.1")
        # A charger that controls its boot strings reboots with a new version every time.
        for n in range(3 * MAX_MEMO):
            store.charger_booted("CP-1", "ACME", f"M-{n}", f"9.{n}")
            assert store.for_charger("CP-1") == ranged
        assert len(store._resolved) <= MAX_MEMO and len(store._identities) <= MAX_MEMO
        assert len(store._chargers) == 1
        # A new store reads what is stored (profiles) at start.
        fresh = VendorStore(engine, SystemClock())
        await fresh.load()
        assert [s.profile for s in fresh.stored] == [ranged]
    finally:
        await engine.dispose()
