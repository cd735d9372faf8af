"""RFC 9457 problem details: every API error is ``application/problem+json`` naming the field."""

from __future__ import annotations

from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from evota.cluster.fence import Deposed
from evota.firmware.storage import StoreUnavailable

PROBLEM = "application/problem+json"
log = structlog.get_logger("evota.api")


class FieldError(BaseModel):
    field: str
    message: str


class ProblemBody(BaseModel):
    """The body of every error answer (RFC 9457); routes may add members of their own."""

    model_config = ConfigDict(
        extra="allow",
        title="Problem",
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "limit: Input should be less than or equal to 1000",
                    "field": "limit",
                }
            ]
        },
    )
    type: str = Field("about:blank", description="a URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = Field(None, description="what exactly is wrong")
    field: str | None = Field(None, description="the request field at fault, when there is one")
    errors: list[FieldError] | None = Field(None, description="422: every invalid field")


_SCHEMA: Final = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
_DESCRIPTIONS: Final = {
    400: "Malformed request body",
    401: "No or invalid credentials (Authorization: Bearer, or the session cookie)",
    403: "Not allowed: a permission, scope, MFA enrolment or CSRF token is missing",
    404: "Unknown (or out of the caller's scope)",
    409: "Conflicts with the current state",
    410: "Gone",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid input: `field` names the first invalid field, `errors` all of them",
    423: "Account locked",
    429: "Too many requests",
    502: "The charger answered with an error",
    504: "The charger did not answer in time",
}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The Problem schema without ``$defs`` references (FieldError inlined)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                return walk(defs[ref.rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


PROBLEM_SCHEMA: Final = _inline(_SCHEMA)


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each a problem+json body."""
    return {
        code: {
            "description": _DESCRIPTIONS.get(code, "Error"),
            "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}},
        }
        for code in codes
    }


def documented(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``responses`` with the problem+json schema added to every error status without
    content, and 401, 403 and 404 added (for routes on one charger)."""
    out = {**problems(401, 403, 404), **responses}
    for code, response in out.items():
        if isinstance(code, int) and code >= 400 and "content" not in response:
            out[code] = {**response, "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}
    return out


AUTHENTICATED: Final = problems(401, 403, 422)
"""What any authenticated route may answer besides its own statuses."""


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        field: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,  # e.g. Retry-After
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.type = type_
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    field: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if field:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[-1] if loc else "(body)")


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_req: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, exc.field, exc.type, exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field_name(tuple(e.get("loc", ()))),
                "message": str(e.get("msg", "invalid")).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "(body)", "message": "invalid request"}
        return problem_response(
            422,
            "Invalid request",
            f"{first['field']}: {first['message']}",
            first["field"],
            errors=errors,
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        """A value the database refuses (SQLSTATE class 22, "data exception": too long, out
        of range, bad encoding) is the client's input, so 422; anything else is a bug."""
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if sqlstate.startswith("22"):
            log.warning("value refused by the database", sqlstate=sqlstate, path=request.url.path)
            return problem_response(
                422,
                "Invalid value",
                f"a value cannot be stored (SQLSTATE {sqlstate}): check lengths and characters",
            )
        return await _unexpected(request, exc)

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
        """The S3 store is down or refuses (evota.firmware.s3_storage): retry later."""
        log.warning("storage unavailable", path=request.url.path, why=str(exc))
        return problem_response(
            503, "Storage unavailable", str(exc), "file", headers={"Retry-After": "30"}
        )

    @app.exception_handler(Deposed)
    async def _deposed(request: Request, exc: Deposed) -> JSONResponse:
        """A runner write refused because this node lost the leadership meanwhile
        (evota.cluster.fence): nothing landed; the next leader takes the call."""
        log.warning("runner write refused: not the leader", path=request.url.path)
        return problem_response(503, "No runner leader", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """The last resort: a bug is a 500 problem naming the request id, never a traceback."""
        state = request.scope.get("state") or {}
        request_id = str(state.get("request_id") or "")
        log.error(
            "unhandled exception",
            request_id=request_id,
            method=request.method,
            path=request.url.path,
            error=type(exc).__name__,
            exc_info=exc,
        )
        return problem_response(
            500,
            "Internal server error",
            "an unexpected error; the server log has the details under this request id",
            headers={"x-request-id": request_id} if request_id else None,
            request_id=request_id or None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)
        )
