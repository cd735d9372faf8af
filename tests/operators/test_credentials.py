"""Password policy and hashing, TOTP with replay protection, recovery codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.operators import credentials as cr

T0 = datetime(2026, 11, 23, 2, 30, tzinfo=UTC)


def test_password_policy():
    assert cr.password_problem("short", "ann") == "must be at least 12 characters"
    assert cr.password_problem("x" * 300, "ann") == "must be at most 256 characters"
    assert cr.password_problem("my-name-is-Ann-ok", "ann") == "must not contain the username"
    assert cr.password_problem("password1234", "bob") == "is too easy to guess"
    assert cr.password_problem("aaaaaaaaaaaaaaaa", "bob") == "is too easy to guess"
    assert cr.password_problem("correct horse battery", "bob") is None


def test_argon2_hash_and_verify():
    h = cr.hash_password("correct horse battery")
    assert h.startswith("$argon2id$") and "correct" not in h
    assert cr.verify_password(h, "correct horse battery")
    assert not cr.verify_password(h, "correct horse batterY")
    assert not cr.verify_password("not-a-hash", "anything")
    assert not cr.verify_password(h, "x" * 1000)
    assert not cr.needs_rehash(h) and cr.needs_rehash("garbage")


def test_totp_accepts_current_and_adjacent_steps_once():
    secret = cr.new_totp_secret()
    code = pyotp.TOTP(secret).at(T0)
    step = cr.verify_totp(secret, code, T0, None)
    assert step == int(T0.timestamp()) // 30
    assert cr.verify_totp(secret, code, T0, step) is None  # replay refused
    late = T0 + timedelta(seconds=30)
    assert cr.verify_totp(secret, code, late, None) == step  # one step of skew
    assert cr.verify_totp(secret, code, T0 + timedelta(seconds=90), None) is None
    assert cr.verify_totp(secret, "12 34 5", T0, None) is None
    assert cr.verify_totp(secret, "abcdef", T0, None) is None
    assert cr.verify_totp(secret, "١٢٣٤٥٦", T0, None) is None  # non-ASCII digits
    uri = cr.otpauth_uri(secret, "ann")
    assert uri.startswith("otpauth://totp/evota:ann?") and f"secret={secret}" in uri


def test_recovery_codes_work_once():
    codes = cr.new_recovery_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = [cr.recovery_digest(c) for c in codes]
    remaining = cr.use_recovery_code(stored, codes[3].upper())
    assert remaining is not None and len(remaining) == 9
    assert cr.use_recovery_code(remaining, codes[3]) is None
    assert cr.use_recovery_code(stored, "nope-nope-nope-nope") is None


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=20), st.integers(0, 10**10))
def test_totp_never_crashes_and_random_codes_rarely_pass(code, seconds):
    now = datetime.fromtimestamp(seconds, UTC)
    result = cr.verify_totp("JBSWY3DPEHPK3PXP", code, now, None)
    assert result is None or code.strip().replace(" ", "") == pyotp.TOTP("JBSWY3DPEHPK3PXP").at(
        result * 30
    )


def test_enrolment_qr_code_is_an_svg_of_the_uri() -> None:
    import xml.etree.ElementTree as ET

    uri = cr.otpauth_uri(cr.new_totp_secret(), "ann")
    svg = cr.qr_svg(uri)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert root.find(".//{http://www.w3.org/2000/svg}path") is not None
    assert cr.qr_svg(uri) == svg  # deterministic for the same URI
    assert cr.qr_svg(cr.otpauth_uri(cr.new_totp_secret(), "ann")) != svg
