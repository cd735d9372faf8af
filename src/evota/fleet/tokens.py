"""Which id tokens (RFID cards, app tokens) may charge where: the pure decision.

A charger asks evota about a token in 1.6 Authorize, StartTransaction and StopTransaction
(``idTagInfo``) and in 2.0.1 Authorize and TransactionEvent (``idTokenInfo``). The answer
comes from the token store (docs/id-tokens.md); this module decides, given the token's
record (or none), the charger's site and the time. No I/O: the store layer
(:mod:`evota.fleet.token_store`) keeps the records in memory and calls here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

#: What an operator can set on a token (1.6 AuthorizationStatus minus ConcurrentTx; every
#: one is also a 2.0.1 AuthorizationStatusEnumType value).
STATUSES: Final = ("Accepted", "Blocked", "Expired", "Invalid")
#: 2.0.1 IdTokenEnumType. A token stored without a type matches any type (and 1.6 id tags,
#: which have none).
TOKEN_TYPES: Final = (
    "Central",
    "eMAID",
    "ISO14443",
    "ISO15693",
    "KeyCode",
    "Local",
    "MacAddress",
    "NoAuthorization",
)
#: The answer for a token valid, but not at this charger's site. 2.0.1 has this status;
#: 1.6 has none for it and is told ``Invalid`` (see :func:`status_16`). Not ``Blocked``:
#: the card is fine elsewhere, and a charger that caches ``Blocked`` would refuse it there.
NOT_HERE: Final = "NotAtThisLocation"
#: The 1.6 idTag limit; longer tokens exist only for 2.0.1 chargers (36 characters).
MAX_ID_TAG_16: Final = 20


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One token as the store holds it. ``sites`` empty: valid at every site."""

    id_token: str
    status: str = "Accepted"
    type: str | None = None
    expires_at: datetime | None = None
    parent_id: str | None = None
    sites: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to give: a status (one of :data:`STATUSES` or :data:`NOT_HERE`) and, when
    known, the token's expiry and group (``parentIdTag`` / ``groupIdToken``)."""

    status: str
    expires_at: datetime | None = None
    parent_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"


INVALID: Final = Decision("Invalid")
ACCEPTED: Final = Decision("Accepted")


def decide(
    record: TokenRecord | None,
    site_id: str | None,
    now: datetime,
    token_type: str | None = None,
) -> Decision:
    """The status for ``record`` presented at a charger of ``site_id`` at ``now``.

    Unknown → Invalid; a type other than the stored one → Invalid (2.0.1 tokens are a value
    *and* a type); a stored Blocked/Expired/Invalid wins over everything else; past its
    expiry → Expired; restricted to other sites (or the charger has none) → NotAtThisLocation.
    """
    if record is None:
        return INVALID
    if record.type is not None and token_type is not None and token_type != record.type:
        return INVALID
    if record.status != "Accepted":
        return Decision(record.status, record.expires_at, record.parent_id)
    if record.expires_at is not None and now >= record.expires_at:
        return Decision("Expired", record.expires_at, record.parent_id)
    if record.sites and site_id not in record.sites:
        return Decision(NOT_HERE, None, record.parent_id)
    return Decision("Accepted", record.expires_at, record.parent_id)


def status_16(status: str) -> str:
    """The 1.6 AuthorizationStatus for a decision's status (1.6 knows no location)."""
    return "Invalid" if status == NOT_HERE else status


def local_list(
    records: Iterable[TokenRecord], site_id: str | None, now: datetime, *, max_length: int = 36
) -> dict[str, dict[str, Any]]:
    """The local authorization list a charger of ``site_id`` should hold: id token →
    ``{"status", "expires_at", "parent_id"}`` (JSON-ready, the form evota keeps as what it
    sent). Tokens restricted to other sites are left out (the charger then asks evota);
    blocked and expired ones stay in, so an offline charger refuses them too. Tokens longer
    than ``max_length`` (20 for 1.6 chargers) are left out: the charger could not hold them.
    """
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        if len(record.id_token) > max_length:
            continue
        decision = decide(record, site_id, now)
        if decision.status == NOT_HERE:
            continue
        out[record.id_token] = {
            "status": decision.status,
            "expires_at": decision.expires_at.isoformat() if decision.expires_at else None,
            "parent_id": decision.parent_id,
        }
    return out


def list_changes(
    sent: Mapping[str, Mapping[str, Any]], wanted: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any] | None]:
    """A differential update from what a charger holds to what it should: id token → new
    entry, or None to remove it."""
    changes: dict[str, dict[str, Any] | None] = {
        token: dict(entry) for token, entry in wanted.items() if sent.get(token) != entry
    }
    for token in sent:
        if token not in wanted:
            changes[token] = None
    return changes
