"""What runs when a four-eyes request of the campaign domain is approved
(``campaign.start``): registered by the runtime with :class:`Approvals`, so the API only
creates the request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from evota.audit.log import Actor
from evota.operators.approvals import Approvals
from evota.rollout.campaigns import CampaignRunner


def register_approvals(approvals: Approvals, campaigns: CampaignRunner) -> None:
    """Start the campaign (at its requested time) once a second operator approved."""

    async def execute(payload: dict[str, Any], approver: Actor) -> dict[str, Any]:
        at = datetime.fromisoformat(payload["at"]) if payload.get("at") else None
        reason = f"approved by {approver.name}: {payload.get('reason') or 'start'}"
        await campaigns.act(payload["campaign_id"], "start", reason, at=at)
        return {"campaign_id": payload["campaign_id"], "started": True}

    approvals.register("campaign.start", execute)
