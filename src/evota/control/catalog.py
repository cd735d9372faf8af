"""Every remote command by its public name: parameters (validated), the domain command they
build, whether a reason is required, and which permission sends it.

The REST route ``POST /api/v1/chargers/{id}/commands/{name}``, ``evota charger NAME`` and bulk
operations all go through this table, so a command behaves the same from every entry point.
Names are kebab-case (``change-availability``), as in URLs and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from evota.control import commands


class Params(BaseModel):
    """Base of every command's parameters: unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Context:
    """What building a command may need from the running system (e.g. an upload URL)."""

    charger_id: str
    upload_url: Callable[[str, str], str] | None = None  # (charger_id, kind) -> URL


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    params: type[Params]
    build: Callable[[Params, Context], commands.Command]
    summary: str
    # Critical commands (they interrupt charging or change behaviour) need a reason.
    critical: bool = True
    # Read-only commands (get-configuration, ...) are still sent by an operator.
    permission: str = "command.send"


class ResetParams(Params):
    type: Literal["Soft", "Hard"] = "Soft"


def _reset(p: Params, _ctx: Context) -> commands.Command:
    assert isinstance(p, ResetParams)
    return commands.Reset(type=p.type)


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            "reset", ResetParams, _reset, "Soft or hard reset (the charger reboots)", critical=True
        ),
    )
}


def get(name: str) -> CommandSpec | None:
    return COMMANDS.get(name)
