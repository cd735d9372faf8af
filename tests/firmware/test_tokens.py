"""Firmware download tokens: round trips, every refusal, key rotation, and fuzzing.

The file server answers 403/410 from these exceptions, so the contract under test is: a
genuine, in-scope, unexpired token yields its grant; anything else raises a TokenError
subclass and never any other exception.
"""

from __future__ import annotations

import base64
import hashlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evota.firmware.delivery import token_status
from evota.firmware.tokens import (
    MAX_TOKEN_CHARS,
    DownloadGrant,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenWrongCharger,
    TokenWrongImage,
    issue,
    verify,
)
from evota.signed_tokens import new_key

NOW = 1_750_000_000
KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
SHA = hashlib.sha256(b"firmware v2.3.1").hexdigest()
OTHER_SHA = hashlib.sha256(b"firmware v2.3.2").hexdigest()
GRANT = DownloadGrant(
    job_id="4f9c2a1e-7b3d-4c8e-9a51-0d6e2f7b8c90",
    charger_id="CP-" + "A" * 45,
    firmware_sha256=SHA,
    expires_at=NOW + 3600,
)
B64URL = string.ascii_letters + string.digits + "-_"

identities = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=48)
ascii_ids = st.text(alphabet=string.printable.strip() + "/:", min_size=1, max_size=48)
grants = st.builds(
    DownloadGrant,
    job_id=identities,
    charger_id=identities,
    firmware_sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    expires_at=st.integers(min_value=0, max_value=2**64 - 1),
)


def test_round_trip() -> None:
    token = issue(GRANT, KEY)
    assert set(token) <= set(B64URL)
    assert verify(token, KEY, now=NOW, charger_id=GRANT.charger_id, firmware_sha256=SHA) == GRANT
    assert verify(token, KEY, now=NOW) == GRANT  # scope checks are optional
    assert verify(token, KEY, now=NOW, firmware_sha256=SHA.upper()) == GRANT


def test_tokens_differ_per_charger_and_job() -> None:
    a = issue(GRANT, KEY)
    b = issue(DownloadGrant("job-2", GRANT.charger_id, SHA, GRANT.expires_at), KEY)
    c = issue(DownloadGrant(GRANT.job_id, "CP-2", SHA, GRANT.expires_at), KEY)
    assert len({a, b, c}) == 3


def test_expired() -> None:
    token = issue(GRANT, KEY)
    assert verify(token, KEY, now=GRANT.expires_at - 1) == GRANT
    with pytest.raises(TokenExpired) as exc:
        verify(token, KEY, now=GRANT.expires_at)
    assert token_status(exc.value) == 410
    assert exc.value.reason == "expired"
    assert exc.value.grant == GRANT


def test_wrong_charger() -> None:
    token = issue(GRANT, KEY)
    with pytest.raises(TokenWrongCharger) as exc:
        verify(token, KEY, now=NOW, charger_id="CP-other")
    assert token_status(exc.value) == 403


def test_wrong_image() -> None:
    token = issue(GRANT, KEY)
    with pytest.raises(TokenWrongImage) as exc:
        verify(token, KEY, now=NOW, firmware_sha256=OTHER_SHA)
    assert token_status(exc.value) == 403


def test_scope_checked_before_expiry() -> None:
    """A stranger with an expired token learns nothing beyond 403."""
    token = issue(GRANT, KEY)
    with pytest.raises(TokenWrongCharger):
        verify(token, KEY, now=GRANT.expires_at + 10, charger_id="CP-other")


def test_wrong_key_is_invalid() -> None:
    token = issue(GRANT, KEY)
    with pytest.raises(TokenInvalid) as exc:
        verify(token, new_key(), now=NOW)
    assert exc.value.reason == "bad signature"
    assert exc.value.grant is None


@pytest.mark.parametrize(
    "token",
    ["", "=", "abc=", "a", "a b", "é", "AAAA", "A" * (MAX_TOKEN_CHARS + 4), "a.b", "\x00"],
)
def test_malformed(token: str) -> None:
    with pytest.raises(TokenInvalid):
        verify(token, KEY, now=NOW)


def test_unknown_version() -> None:
    raw = bytearray(base64.urlsafe_b64decode(issue(GRANT, KEY) + "=="))
    raw[0] = 2
    token = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid) as exc:
        verify(token, KEY, now=NOW)
    assert exc.value.reason == "unknown version"


def test_padding_is_refused() -> None:
    token = issue(GRANT, KEY)
    with pytest.raises(TokenInvalid):
        verify(token + "=" * (-len(token) % 4 or 4), KEY, now=NOW)


def test_key_rotation() -> None:
    old_token = issue(GRANT, OLD_KEY)
    new_token = issue(GRANT, KEY)
    assert verify(old_token, [KEY, OLD_KEY], now=NOW) == GRANT
    assert verify(new_token, [KEY, OLD_KEY], now=NOW) == GRANT
    assert verify(old_token, (OLD_KEY,), now=NOW) == GRANT
    with pytest.raises(TokenInvalid):
        verify(old_token, [KEY], now=NOW)
    with pytest.raises(TokenInvalid):
        verify(old_token, KEY, now=NOW)


def test_bad_key_arguments() -> None:
    token = issue(GRANT, KEY)
    with pytest.raises(ValueError):
        verify(token, [], now=NOW)
    with pytest.raises(ValueError):
        verify(token, b"short", now=NOW)
    with pytest.raises(ValueError):
        issue(GRANT, b"short")


@pytest.mark.parametrize(
    "grant",
    [
        DownloadGrant("j", "c", "zz" * 32, NOW),
        DownloadGrant("j", "c", SHA[:-1], NOW),
        DownloadGrant("", "c", SHA, NOW),
        DownloadGrant("j", "", SHA, NOW),
        DownloadGrant("j", "x" * 256, SHA, NOW),
        DownloadGrant("j", "c", SHA, -1),
        DownloadGrant("j", "c", SHA, 2**64),
    ],
)
def test_issue_rejects_unencodable_grants(grant: DownloadGrant) -> None:
    with pytest.raises(ValueError):
        issue(grant, KEY)


def test_new_key() -> None:
    a, b = new_key(), new_key()
    assert len(a) == 32 and a != b


@settings(max_examples=300, deadline=None)
@given(grant=grants)
def test_round_trip_random(grant: DownloadGrant) -> None:
    token = issue(grant, KEY)
    now = max(grant.expires_at - 1, 0)
    if grant.expires_at == 0:
        with pytest.raises(TokenExpired):
            verify(token, KEY, now=now)
    else:
        assert verify(token, KEY, now=now, charger_id=grant.charger_id) == grant


@settings(max_examples=300, deadline=None)
@given(grant=grants, now=st.integers(min_value=0, max_value=2**64))
def test_random_grant_verdicts(grant: DownloadGrant, now: int) -> None:
    token = issue(grant, KEY)
    if now < grant.expires_at:
        assert verify(token, [OLD_KEY, KEY], now=now, firmware_sha256=grant.firmware_sha256) == (
            grant
        )
    else:
        with pytest.raises(TokenExpired):
            verify(token, KEY, now=now)


@settings(max_examples=500, deadline=None)
@given(token=st.text(max_size=300) | st.text(alphabet=B64URL, max_size=300))
def test_arbitrary_strings_only_raise_invalid(token: str) -> None:
    with pytest.raises(TokenInvalid):
        verify(token, [KEY, OLD_KEY], now=NOW)


@settings(max_examples=500, deadline=None)
@given(
    grant=grants,
    data=st.data(),
)
def test_any_single_character_change_is_refused(grant: DownloadGrant, data: st.DataObject) -> None:
    token = issue(grant, KEY)
    i = data.draw(st.integers(min_value=0, max_value=len(token) - 1), label="index")
    c = data.draw(st.sampled_from(B64URL) | st.characters(codec="utf-8"), label="char")
    mutated = token[:i] + c + token[i + 1 :]
    if mutated == token:
        return
    with pytest.raises(TokenInvalid):
        verify(mutated, KEY, now=0)


@settings(max_examples=200, deadline=None)
@given(
    job_id=st.text(alphabet=string.printable.strip(), min_size=1, max_size=36),
    charger_id=ascii_ids,
    expires_at=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_url_length_bound(job_id: str, charger_id: str, expires_at: int) -> None:
    token = issue(DownloadGrant(job_id, charger_id, SHA, expires_at), KEY)
    url = "https://firmware.example.com/fw/" + token
    assert len(token) <= 191
    assert len(url) < 256  # well under OCPP 2.0.1's 512-character location


def test_token_error_hierarchy() -> None:
    for cls in (TokenInvalid, TokenExpired, TokenWrongCharger, TokenWrongImage):
        assert issubclass(cls, TokenError)
