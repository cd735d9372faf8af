"""A vendor's release feed: its JSON format, read strictly, and which entries are new. Pure.

A feed is a JSON document at a URL the vendor publishes::

    {
      "signing_certificate": "-----BEGIN CERTIFICATE-----...",   (optional, for every release)
      "releases": [
        {
          "version": "2.5.0",
          "url": "https://downloads.acme.example/fw/acme-2.5.0.bin",
          "sha256": "9f86d0...",                   (hex, required: the bytes are checked)
          "signature": "MEUCIQ..." | "https://.../acme-2.5.0.sig",   (Base64, or where it is)
          "signing_certificate": "-----BEGIN ...", (optional, overrides the feed's)
          "models": ["AC22"],
          "hardware_revisions": [],                (optional: any)
          "release_notes": "..."                   (optional)
        }
      ]
    }

(a bare list of releases is read the same way). Every value is checked like an upload's
field; the first problem is a :class:`FeedError` naming its path (``releases[3].sha256``), so
a vendor's mistake is reported precisely and nothing of a malformed feed is imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MAX_RELEASES", "FeedError", "Release", "new_releases", "parse_feed"]

MAX_RELEASES: Final = 1000
_MAX_NAME: Final = 50
_MAX_LIST: Final = 100
_MAX_URL: Final = 2048
_MAX_NOTES: Final = 64 * 1024
_MAX_SIGNATURE: Final = 900  # OCPP's 800 Base64 characters, with room for line breaks
_MAX_CERTIFICATE: Final = 5500
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELDS: Final = frozenset(
    {
        "version",
        "url",
        "sha256",
        "signature",
        "signing_certificate",
        "models",
        "hardware_revisions",
        "release_notes",
        "vendor",
    }
)


class FeedError(Exception):
    """A feed that cannot be read: ``field`` is the path of the first problem."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Release:
    """One entry of a feed, checked."""

    version: str
    url: str
    sha256: str
    models: tuple[str, ...]
    hardware_revisions: tuple[str, ...] = ()
    signature: str | None = None  # Base64
    signature_url: str | None = None  # or where to fetch it (Base64 text or DER)
    signing_certificate: str | None = None
    release_notes: str = ""


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise FeedError(path, "must be a string")
    value = value.strip()
    if not 1 <= len(value) <= _MAX_NAME or _CONTROL.search(value):
        raise FeedError(path, f"1 to {_MAX_NAME} printable characters")
    return value


def _names(value: Any, path: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list):
        raise FeedError(path, "must be a list of strings")
    if required and not value:
        raise FeedError(path, "must list at least one")
    if len(value) > _MAX_LIST:
        raise FeedError(path, f"at most {_MAX_LIST} entries")
    return tuple(_name(v, f"{path}[{i}]") for i, v in enumerate(value))


def _text(value: Any, path: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FeedError(path, "must be a string")
    if len(value) > limit:
        raise FeedError(path, f"longer than {limit} characters")
    return value if value.strip() else None


def _release(entry: Any, path: str, certificate: str | None, vendor: str) -> Release:
    if not isinstance(entry, Mapping):
        raise FeedError(path, "must be an object")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise FeedError(f"{path}.{unknown[0]}", "unknown field")
    claimed = entry.get("vendor")
    if claimed is not None and (not isinstance(claimed, str) or claimed.lower() != vendor.lower()):
        raise FeedError(f"{path}.vendor", f"this feed is for {vendor}")
    url = _text(entry.get("url"), f"{path}.url", _MAX_URL)
    if url is None:
        raise FeedError(f"{path}.url", "required")
    sha256 = entry.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise FeedError(f"{path}.sha256", "required: 64 hex digits")
    signature = _text(entry.get("signature"), f"{path}.signature", _MAX_URL)
    signature_url = None
    if signature is not None and signature.lower().startswith(("https://", "http://")):
        signature, signature_url = None, signature
    elif signature is not None and len(signature) > _MAX_SIGNATURE:
        raise FeedError(f"{path}.signature", f"longer than {_MAX_SIGNATURE} characters")
    own = _text(entry.get("signing_certificate"), f"{path}.signing_certificate", _MAX_CERTIFICATE)
    notes = _text(entry.get("release_notes"), f"{path}.release_notes", _MAX_NOTES)
    return Release(
        version=_name(entry.get("version"), f"{path}.version"),
        url=url.strip(),
        sha256=sha256.lower(),
        models=_names(entry.get("models"), f"{path}.models", required=True),
        hardware_revisions=_names(
            entry.get("hardware_revisions"), f"{path}.hardware_revisions", required=False
        ),
        signature=signature,
        signature_url=signature_url,
        signing_certificate=own or certificate,
        release_notes=notes or "",
    )


def parse_feed(doc: Any, vendor: str) -> list[Release]:
    """The releases of a parsed JSON feed for ``vendor``, in the feed's order, each version
    once (the first entry wins); :class:`FeedError` for the first problem."""
    certificate = None
    if isinstance(doc, Mapping):
        unknown = sorted(set(doc) - {"releases", "signing_certificate", "vendor"})
        if unknown:
            raise FeedError(unknown[0], "unknown field")
        certificate = _text(doc.get("signing_certificate"), "signing_certificate", _MAX_CERTIFICATE)
        entries = doc.get("releases")
        prefix = "releases"
    else:
        entries, prefix = doc, ""
    if not isinstance(entries, list):
        raise FeedError(prefix or "(feed)", "must be a list of releases")
    if len(entries) > MAX_RELEASES:
        raise FeedError(prefix or "(feed)", f"more than {MAX_RELEASES} releases")
    releases: dict[str, Release] = {}
    for i, entry in enumerate(entries):
        release = _release(entry, f"{prefix}[{i}]", certificate, vendor)
        releases.setdefault(release.version, release)
    return list(releases.values())


def new_releases(
    releases: Sequence[Release],
    existing: set[str],
    refused: Mapping[str, str],
    limit: int,
) -> list[Release]:
    """At most ``limit`` releases to import: versions the repository lacks, except those
    refused before for the same bytes (a changed ``sha256`` is tried again)."""
    chosen: list[Release] = []
    for release in releases:
        if len(chosen) >= limit:
            break
        if release.version in existing or refused.get(release.version) == release.sha256:
            continue
        chosen.append(release)
    return chosen
