"""The inventory's pure decisions (evota.pki.inventory): hash data as OCPP spells it, and which
certificates to alert on and which chargers to ask for a renewal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evota.pki.inventory import (
    Expiry,
    HashData,
    SignedView,
    expiring,
    install_record,
    normal_serial,
    renewals,
    seen_from_record,
)
from tests.pki_fixtures import Pki

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def test_serials_compare_as_ocpp_spells_them() -> None:
    assert normal_serial("00AbC") == "abc" and normal_serial("000") == "0"
    a = HashData("sha256", "AA", "BB", "0001")
    assert a.key() == HashData("SHA256", "aa", "bb", "1").key()


def test_an_install_record_reads_back_and_a_leaf_keeps_nothing(pki: Pki) -> None:
    record = {"subject": "CN=root", **install_record(pki.csms_root.cert)}
    found = seen_from_record(record)
    assert found is not None and found[1].not_after == pki.csms_root.cert.not_valid_after_utc
    assert install_record(pki.good.cert) == {}  # not self-issued: its issuer's key is unknown
    assert seen_from_record({"serial": "1"}) is None


def test_expiring_is_soonest_first_and_zero_days_is_off() -> None:
    items = [
        Expiry("late", None, NOW + timedelta(days=20)),
        Expiry("gone", None, NOW - timedelta(days=1)),
        Expiry("far", None, NOW + timedelta(days=90)),
    ]
    assert [e.subject for e in expiring(items, NOW, 30)] == ["gone", "late"]
    assert expiring(items, NOW, 0) == []


def test_renewals_skip_offline_busy_recently_asked_and_respect_the_budget() -> None:
    signed = [SignedView(f"CP-{n}", str(n), NOW + timedelta(days=n)) for n in range(1, 8)]
    plan = renewals(
        signed,
        NOW,
        5,
        connected={"CP-1", "CP-2", "CP-3", "CP-4", "CP-5", "CP-7"},
        busy={"CP-2"},
        asked={"CP-3": NOW - timedelta(hours=1), "CP-4": NOW - timedelta(days=2)},
        retry_after=timedelta(days=1),
        budget=2,
    )
    # CP-2 in a session, CP-3 asked an hour ago, CP-6 offline, CP-7 outside the window
    assert [p.charger_id for p in plan] == ["CP-1", "CP-4"]
    assert renewals(signed, NOW, 5, connected={"CP-1"}, busy=set(), asked={},
                    retry_after=timedelta(days=1), budget=0) == []  # fmt: skip
