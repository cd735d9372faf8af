"""One envelope for every signed URL token, one key loader, one file-name rule.

Download and upload tokens share :mod:`evota.signed_tokens`; the MAC's domain keeps the
kinds apart even under one key. Keys load through :func:`evota.files.load_key`.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from evota import signed_tokens
from evota.control import uploads
from evota.files import load_key, safe_filename
from evota.firmware import tokens
from evota.signed_tokens import MIN_KEY_BYTES, TAG_BYTES, TokenInvalid

NOW = 1_750_000_000
KEY = bytes(range(32))
DOWNLOAD = tokens.DownloadGrant("job-1", "CP-1", "ab" * 32, NOW + 600)
UPLOAD = uploads.UploadGrant("CP-1", "diagnostics", 7, NOW + 600)


def _body(token: str, longest: int) -> bytes:
    return signed_tokens.decode(token, longest)[:-TAG_BYTES]


def test_a_token_of_one_kind_never_verifies_as_the_other() -> None:
    """Same key, same envelope: only the domain in the MAC tells the kinds apart."""
    down = tokens.issue(DOWNLOAD, KEY)
    up = uploads.issue(UPLOAD, KEY)
    with pytest.raises(TokenInvalid):
        uploads.verify(down, KEY, now=NOW)
    with pytest.raises(TokenInvalid):
        tokens.verify(up, KEY, now=NOW)
    # A body that is well-formed for its kind, sealed for the other kind's domain: refused on
    # the signature alone (its layout would parse).
    down_body = _body(down, tokens.MAX_TOKEN_CHARS)
    up_body = _body(up, uploads.MAX_TOKEN_CHARS)
    assert tokens.verify(signed_tokens.seal(down_body, KEY, tokens.DOMAIN), KEY, now=NOW)
    assert uploads.verify(signed_tokens.seal(up_body, KEY, uploads.DOMAIN), KEY, now=NOW)
    for token, check in (
        (signed_tokens.seal(down_body, KEY, uploads.DOMAIN), tokens.verify),
        (signed_tokens.seal(up_body, KEY, tokens.DOMAIN), uploads.verify),
    ):
        with pytest.raises(TokenInvalid) as exc:
            check(token, KEY, now=NOW)
        assert exc.value.reason == "bad signature"
    assert tokens.DOMAIN != uploads.DOMAIN


def test_upload_tokens_take_a_list_of_keys_like_download_tokens() -> None:
    old = bytes(range(100, 132))
    token = uploads.issue(UPLOAD, old)
    assert uploads.verify(token, [KEY, old], now=NOW).charger_id == "CP-1"
    with pytest.raises(TokenInvalid):
        uploads.verify(token, [KEY], now=NOW)
    with pytest.raises(ValueError):
        uploads.verify(token, b"short", now=NOW)


def test_load_key_creates_a_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "download-token.key"
    key = load_key(path)
    assert len(key) == signed_tokens.KEY_BYTES and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["download-token.key"]  # no temp left


def test_load_key_replaces_an_unusable_file(tmp_path: Path) -> None:
    """A file too short to be a key (an interrupted write) cannot have signed anything."""
    path = tmp_path / "upload-token.key"
    path.write_bytes(b"x" * (MIN_KEY_BYTES - 1))
    os.chmod(path, 0o644)
    key = load_key(path)
    assert len(key) == signed_tokens.KEY_BYTES and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_key_agrees_when_raced(tmp_path: Path) -> None:
    """Processes starting together (server, CLI) end up with one key, never half of one."""
    path = tmp_path / "download-token.key"
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def load() -> None:
        start.wait()
        keys.append(load_key(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and path.read_bytes() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == ["download-token.key"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme-2.4.0.bin", "acme-2.4.0.bin"),
        ("C:\\Users\\me\\fw.bin", "fw.bin"),
        ("../../etc/passwd", "passwd"),
        ("..", None),
        ("", None),
        (None, None),
        (" a\x01\x7fb.bin ", "a__b.bin"),
        ('x"; y=.bin', "x___y_.bin"),
        ("fïrmware v2.bin", "f_rmware_v2.bin"),
        ("x" * 300 + ".bin", "x" * 255),
    ],
)
def test_safe_filename(raw: str | None, expected: str | None) -> None:
    assert safe_filename(raw) == expected
    assert safe_filename(raw, "fallback.log") == (expected or "fallback.log")
