"""Remote commands: ``POST /api/v1/chargers/{charger_id}/commands/{name}``, one route per
catalog entry (generated, so OpenAPI shows each command's own body).

The body is the command's parameters plus ``reason``, which critical commands require. The
answer is the charger's (200 with its status, whatever it is); no answer is a problem: 409
offline, 504 timeout, 502 CALLERROR or an unusable answer. Either way exactly one audit entry
``command.<name>`` is written, by :func:`evota.control.dispatch.send_command`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, create_model

from evota.api.deps import Principal, RuntimeDep, require_charger
from evota.api.params import ChargerId
from evota.api.problems import Problem, documented
from evota.api.schemas import CommandOut
from evota.cluster.routing import ClusterUnavailable, NodeLost
from evota.control import catalog, commands, dispatch
from evota.runtime import Runtime

router = APIRouter(prefix="/api/v1/chargers", tags=["commands"])

_COMMAND_ERRORS = {
    commands.ChargerOffline: (409, "Charger offline"),
    commands.CommandTimeout: (504, "Charger did not answer"),
    commands.CommandRejected: (502, "Charger answered with an error"),
    commands.CommandNotSupported: (409, "Not supported by the charger's protocol"),
    commands.UnsupportedByModel: (409, "Not supported by the charger's model"),
    # Cluster mode (evota.cluster.routing): the charger's node died with the CALL open, or
    # Redis is away so chargers on other nodes cannot be reached; both pass, so 503.
    NodeLost: (503, "The charger's node was lost"),
    ClusterUnavailable: (503, "Cluster coordination unavailable"),
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "The charger is not connected, or its OCPP version cannot express this"},
    422: {"description": "Invalid parameters, or no reason for a critical command"},
    502: {"description": "The charger answered with a CALLERROR (or an invalid answer)"},
    503: {"description": "Cluster mode: the charger's node was lost, or Redis is unavailable"},
    504: {"description": "The charger did not answer in time"},
}
_RESPONSES = documented(_RESPONSES)  # problem+json bodies, and 401/403/404


def problem_for(exc: commands.CommandError) -> Problem:
    """The HTTP problem for a command that got no usable answer."""
    status, title = _COMMAND_ERRORS.get(type(exc), (502, "Command failed"))
    extra: dict[str, Any] = {"reason": exc.reason}
    if isinstance(exc, commands.CommandRejected):
        extra["ocpp_error_code"] = exc.code
    return Problem(status, title, exc.message, getattr(exc, "field", None), **extra)


async def run_command(
    rt: Runtime,
    who: Principal,
    charger_id: str,
    spec: catalog.CommandSpec,
    params: catalog.Params,
    reason: str | None,
    request: Request | None = None,
) -> CommandOut:
    """Send through the audited dispatch path and map a missing answer to a problem."""
    if request is not None:
        request.state.audited = True  # dispatch records the entry, with the answer
    try:
        result = await dispatch.send_command(
            rt.command_path, who.actor, charger_id, spec, params, reason
        )
    except commands.CommandError as exc:
        raise problem_for(exc) from None
    return CommandOut(
        charger_id=charger_id, command=spec.name, status=result.status, details=result.details
    )


def _body_model(spec: catalog.CommandSpec) -> type[catalog.Params]:
    name = "".join(part.title() for part in spec.name.split("-")) + "CommandRequest"
    why = "why (required: this command is critical)" if spec.critical else "why (optional)"
    model: type[catalog.Params] = create_model(
        name,
        __base__=spec.params,
        reason=(str | None, Field(None, max_length=1000, description=why)),
    )
    return model


def _route(spec: catalog.CommandSpec) -> None:
    body_model = _body_model(spec)
    fields = set(spec.params.model_fields)

    async def endpoint(
        charger_id: ChargerId,
        body: catalog.Params,
        request: Request,
        rt: RuntimeDep,
        who: Principal = require_charger(spec.permission),  # in scope before the body
    ) -> CommandOut:
        reason = (getattr(body, "reason", None) or "").strip() or None
        request.state.audit_reason = reason
        if spec.critical and reason is None:
            raise Problem(
                422,
                "Reason required",
                f"{spec.name} is a critical command: say why in 'reason'",
                "reason",
            )
        params = spec.params.model_validate(body.model_dump(include=fields))
        return await run_command(rt, who, charger_id, spec, params, reason, request)

    # The body's model is made per command above; FastAPI reads it from the annotation.
    endpoint.__annotations__["body"] = body_model
    endpoint.__name__ = "command_" + spec.name.replace("-", "_")
    endpoint.__doc__ = spec.summary + "." + (" A reason is required." if spec.critical else "")
    router.add_api_route(
        f"/{{charger_id}}/commands/{spec.name}",
        endpoint,
        methods=["POST"],
        response_model=CommandOut,
        summary=spec.summary,
        responses=_RESPONSES,
        name=endpoint.__name__,
    )


for _spec in catalog.COMMANDS.values():
    _route(_spec)
