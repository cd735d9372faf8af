"""What the campaign runner remembers of its campaigns' jobs, so a tick reads what changed.

The engine needs every job of a campaign on every tick. Reading them all every second costs
a 20,000-row query per campaign per second; instead the job runner says which job it just
wrote (``JobRunner.change_listeners``, called after the commit: every job transition goes
through it), and a tick reads only those rows. A campaign is read whole the first time, after
``full_every`` (a safety net for writes that bypass the runner, such as retention), and when
more jobs changed than the notice set holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from evota import metrics
from evota.rollout.campaign import JobView
from evota.store.models import Job

_CHUNK = 500  # ids per IN (...) query
MAX_NOTICES = 50_000  # more changed jobs than this between two ticks: read campaigns whole

_COLUMNS = (
    Job.id,
    Job.campaign_id,
    Job.charger_id,
    Job.kind,
    Job.state,
    Job.failure,
    Job.previous_version,
    Job.target_version,
    Job.created_at,
    Job.finished_at,
)


def _view(r: Any) -> JobView:
    return JobView(
        charger_id=r.charger_id,
        job_id=r.id,
        kind=r.kind,
        state=r.state,
        failure=r.failure,
        previous_version=r.previous_version,
        target_version=r.target_version,
        created_at=r.created_at,
        finished_at=r.finished_at,
    )


def by_charger(jobs: Mapping[int, JobView]) -> dict[str, list[JobView]]:
    """The engine's shape: each charger's jobs, oldest first."""
    views: dict[str, list[JobView]] = {}
    for job_id in sorted(jobs):
        view = jobs[job_id]
        views.setdefault(view.charger_id, []).append(view)
    return views


async def read_whole(conn: AsyncConnection, campaign_id: str) -> dict[int, JobView]:
    rows = (await conn.execute(select(*_COLUMNS).where(Job.campaign_id == campaign_id))).all()
    metrics.CAMPAIGN_JOB_ROWS_READ.inc(len(rows))
    return {r.id: _view(r) for r in rows}


class CampaignJobs:
    def __init__(self, full_every: timedelta = timedelta(minutes=5)) -> None:
        self.full_every = full_every
        self._jobs: dict[str, dict[int, JobView]] = {}  # campaign id -> job id -> view
        self._read_at: dict[str, datetime] = {}
        self._changed: set[int] = set()
        self._overflow = False

    def changed(self, job_id: int) -> None:
        """The job runner wrote this job (called on the event loop, after the commit)."""
        if self._overflow:
            return
        if len(self._changed) >= MAX_NOTICES:  # bounded: forget the ids, read whole instead
            self._changed.clear()
            self._overflow = True
            return
        self._changed.add(job_id)

    def retain(self, campaign_ids: Sequence[str]) -> None:
        """Forget campaigns no longer evaluated (finished ones): memory follows the active."""
        keep = set(campaign_ids)
        for campaign_id in [c for c in self._jobs if c not in keep]:
            del self._jobs[campaign_id]
            self._read_at.pop(campaign_id, None)

    async def read(
        self, conn: AsyncConnection, campaign_id: str, now: datetime
    ) -> dict[str, list[JobView]]:
        """The campaign's jobs as of now: the remembered ones updated with what changed."""
        if self._overflow:
            self._overflow = False
            self._jobs.clear()
            self._read_at.clear()
        changed, self._changed = self._changed, set()  # taken before the read: nothing lost
        remembered = self._jobs.get(campaign_id)
        read_at = self._read_at.get(campaign_id)
        if remembered is None or read_at is None or now - read_at >= self.full_every:
            self._jobs[campaign_id] = await read_whole(conn, campaign_id)
            self._read_at[campaign_id] = now
        await self._apply(conn, sorted(changed))
        return by_charger(self._jobs[campaign_id])

    async def _apply(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        for i in range(0, len(ids), _CHUNK):
            rows = (
                await conn.execute(select(*_COLUMNS).where(Job.id.in_(ids[i : i + _CHUNK])))
            ).all()
            metrics.CAMPAIGN_JOB_ROWS_READ.inc(len(rows))
            for r in rows:
                jobs = self._jobs.get(r.campaign_id) if r.campaign_id else None
                if jobs is not None:  # a campaign not remembered is read whole when evaluated
                    jobs[r.id] = _view(r)
