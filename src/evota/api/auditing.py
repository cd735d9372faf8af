"""What a route tells the audit middleware about its call: the target and what changed.

The middleware (``evota.api.middleware``) writes one entry per state-changing call; a route
calls ``note`` so that the entry names the target (type and id) and carries the before/after
of the fields that changed (``evota.audit.changes.diff``: secrets redacted by field name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request

from evota.audit import changes


def note(
    request: Request,
    kind: str,
    target_id: str | None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Name this call's target; with ``before``/``after`` (None for a creation or
    deletion) record the fields that changed."""
    request.state.audit_target_type = kind
    request.state.audit_target = target_id
    detail: dict[str, Any] = dict(getattr(request.state, "audit_detail", {}) or {})
    if before is not None or after is not None:
        detail["changes"] = changes.diff(before, after)
    detail.update(changes.redact(extra))
    request.state.audit_detail = detail
