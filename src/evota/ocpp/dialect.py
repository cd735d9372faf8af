"""One OCPP version as the gateway sees it: subprotocol, schemas, error spelling, adapter.

The gateway only talks to a :class:`Dialect`; adding ``ocpp2.0.1`` means adding a second
instance to :data:`DIALECTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evota.control import commands
from evota.fleet import events as ev
from evota.ocpp import schemas, v16
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


#: Supported subprotocols in the server's order of preference.
DIALECTS: dict[str, Dialect] = {d.subprotocol: d for d in (_v16(),)}


def choose(offered: list[str]) -> Dialect | None:
    """Pick the server's most preferred subprotocol among those the charger offered."""
    for name, dialect in DIALECTS.items():
        if name in offered:
            return dialect
    return None
