"""One OCPP version as the gateway sees it: subprotocol, schemas, error spelling, adapter.

The gateway only talks to a :class:`Dialect`: ``ocpp1.6`` and ``ocpp2.0.1`` are two
instances of it, chosen per connection from the subprotocols the charger offers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evota.control import commands
from evota.fleet import events as ev
from evota.ocpp import schemas, v16, v201
from evota.ocpp.errors import ErrorKind


@dataclass(frozen=True)
class Dialect:
    subprotocol: str
    schemas: schemas.SchemaSet
    spelling: Mapping[ErrorKind, str]
    charger_actions: frozenset[str]
    pre_accept_actions: frozenset[str]
    decode_event: Callable[[str, dict[str, Any]], ev.ChargerEvent]
    encode_reply: Callable[[str, ev.Reply], dict[str, Any]]
    encode_command: Callable[[commands.Command], tuple[str, dict[str, Any]]]
    decode_result: Callable[[commands.Command, dict[str, Any]], commands.CommandResult]

    def code(self, kind: ErrorKind) -> str:
        return self.spelling[kind]


def _v16() -> Dialect:
    return Dialect(
        subprotocol=v16.SUBPROTOCOL,
        schemas=schemas.v16(),
        spelling=v16.ERROR_SPELLING,
        charger_actions=v16.CHARGER_ACTIONS,
        pre_accept_actions=v16.PRE_ACCEPT_ACTIONS,
        decode_event=v16.decode_event,
        encode_reply=v16.encode_reply,
        encode_command=v16.encode_command,
        decode_result=v16.decode_result,
    )


def _v201() -> Dialect:
    return Dialect(
        subprotocol=v201.SUBPROTOCOL,
        schemas=schemas.v201(),
        spelling=v201.ERROR_SPELLING,
        charger_actions=v201.CHARGER_ACTIONS,
        pre_accept_actions=v201.PRE_ACCEPT_ACTIONS,
        decode_event=v201.decode_event,
        encode_reply=v201.encode_reply,
        encode_command=v201.encode_command,
        decode_result=v201.decode_result,
    )


#: Supported subprotocols in the server's order of preference: a charger that offers both
#: gets the newer protocol.
DIALECTS: dict[str, Dialect] = {d.subprotocol: d for d in (_v201(), _v16())}


def choose(offered: list[str]) -> Dialect | None:
    """Pick the server's most preferred subprotocol among those the charger offered."""
    for name, dialect in DIALECTS.items():
        if name in offered:
            return dialect
    return None
