"""evota.audit.changes: the before/after an audit entry carries, secrets redacted by name;
and every state-changing API route names its target."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

from fastapi.routing import APIRoute

from evota.audit.changes import REDACTED, diff, is_secret, redact


def test_diff_lists_only_changed_fields() -> None:
    before = {"id": "paris", "name": "Paris", "region": "FR", "tags": ["a"]}
    after = {"id": "paris", "name": "Paris", "region": "DE", "tags": ["a"]}
    assert diff(before, after) == {"region": {"before": "FR", "after": "DE"}}
    assert diff(before, before) == {}


def test_creation_and_deletion() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    assert diff(None, {"id": "x", "at": at}) == {
        "at": {"before": None, "after": at.isoformat()},
        "id": {"before": None, "after": "x"},
    }
    assert diff({"id": "x"}, None) == {"id": {"before": "x", "after": None}}


def test_secrets_are_redacted_by_name_in_one_place() -> None:
    out = diff({"auth_key": "old-secret"}, {"auth_key": "new-secret", "new_password": "pw"})
    assert out == {
        "auth_key": {"before": REDACTED, "after": REDACTED},
        "new_password": {"before": None, "after": REDACTED},
    }
    assert "secret" not in repr(out) and "pw" not in repr(out.get("new_password"))
    assert is_secret("TOTP_SECRET") and is_secret("token") and not is_secret("id_token")
    assert redact({"password": "x", "name": "y"}) == {"password": REDACTED, "name": "y"}


def test_every_state_changing_route_names_its_target() -> None:
    """A route names its target by a path parameter, by ``note(...)``, or by recording its
    own entry with a target; a new route that does none of these fails here."""
    from evota.api.access import _api_routes
    from evota.api.app import create_app

    class _Rt:  # create_app only keeps the runtime for later
        settings = None
        audit = None

    app = create_app(_Rt())  # type: ignore[arg-type]
    missing = []
    checked = 0
    for route in _api_routes(app.routes):
        if not isinstance(route, APIRoute) or not route.path.startswith("/api/"):
            continue
        if not route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            continue
        checked += 1
        source = inspect.getsource(route.endpoint)
        named = (
            "{" in route.path
            or "note(" in source
            or "_audit(" in source
            or ("audit.record(" in source and "target=" in source)
            or "audited = True" in source  # a component records the entry, with its target
        )
        if not named:
            missing.append(f"{sorted(route.methods)} {route.path}")
    assert checked > 40 and missing == []
