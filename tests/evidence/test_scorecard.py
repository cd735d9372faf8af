"""A firmware version's scorecard, pure (evota.evidence.scorecard)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from evota.evidence import scorecard as sc

IMAGE = sc.Image("fw-2", "Acme", "2.0.0", ("AC22",), "released")


def test_predecessor_is_the_newest_older_shipped_image_for_the_same_models() -> None:
    siblings = [
        IMAGE,
        sc.Image("fw-1", "ACME", "1.0.0", ("AC22",), "deprecated"),
        sc.Image("fw-15", "acme", "1.5.0", (), "revoked"),  # no models: every model
        sc.Image("fw-19", "Acme", "1.9.0", ("AC22",), "draft"),  # never shipped
        sc.Image("fw-18", "Acme", "1.8.0", ("DC150",), "released"),  # another model
        sc.Image("fw-3", "Acme", "3.0.0", ("AC22",), "pilot"),  # newer
        sc.Image("fw-o", "Other", "1.9.9", ("AC22",), "released"),  # another vendor
    ]
    assert sc.predecessor(IMAGE, siblings) == siblings[2]
    assert sc.predecessor(IMAGE, [IMAGE]) is None


def test_build_groups_incidents_and_lists_campaigns() -> None:
    t = datetime(2026, 3, 1, tzinfo=UTC)
    card = sc.build(
        sc.Inputs(
            image=IMAGE,
            placements=[
                sc.Placement("AC22", "paris", "FR", 3),
                sc.Placement("AC22", "lyon", "FR", 1),
                sc.Placement(None, None, None, 2),
            ],
            jobs_to=[
                sc.JobCount("update", "succeeded", None, 4),
                sc.JobCount("update", "failed", "download_failed", 2),
                sc.JobCount("update", "failed", "unhealthy", 3),
                sc.JobCount("update", "failed", None, 1),
                sc.JobCount("rollback", "succeeded", None, 1),
            ],
            rollbacks_away=[sc.JobCount("rollback", "succeeded", None, 2)],
            security_events=[("TamperDetectionActivated", 1), ("", 2)],
            campaigns=[
                sc.CampaignRow("c2", "later", "running", t.replace(day=2)),
                sc.CampaignRow("c1", "first", "completed", t),
                sc.CampaignRow("c3", "elsewhere", "draft", t.replace(day=3)),
            ],
            campaign_jobs=[
                sc.CampaignJobs("c1", "succeeded", 4),
                sc.CampaignJobs("c1", "failed", 2),
                sc.CampaignJobs("c2", "failed", 4),
            ],
        )
    )
    assert card.running == 6
    assert card.by_model == (("AC22", 4), ("unknown", 2))
    assert card.by_site == (("paris", 3), ("unknown", 2), ("lyon", 1))
    assert card.by_region == (("FR", 4), ("unknown", 2))
    assert card.updates == {"failed": 6, "succeeded": 4}
    assert card.failed_by_reason == (("unhealthy", 3), ("download_failed", 2), ("unknown", 1))
    assert card.rollbacks_to == {"succeeded": 1} and card.rollbacks_away == {"succeeded": 2}
    assert card.security_events == (("unknown", 2), ("TamperDetectionActivated", 1))
    assert [c["id"] for c in card.campaigns] == ["c1", "c2", "c3"]
    assert card.campaigns[0]["jobs"] == {"failed": 2, "succeeded": 4}
    assert card.campaigns[0]["chargers"] == 6
    body = sc.to_json(card)
    assert body["kpis_url"] == "/api/v1/firmware/fw-2/kpis"
    assert body["campaigns"][0]["created_at"] == t.isoformat()
    assert body["running"]["by_site"][0] == {"site_id": "paris", "chargers": 3}


def test_a_scoped_view_lists_only_campaigns_that_touched_its_chargers() -> None:
    inputs = sc.Inputs(
        image=IMAGE,
        campaigns=[sc.CampaignRow("c1", "mine", "running"), sc.CampaignRow("c2", "not", "running")],
        campaign_jobs=[sc.CampaignJobs("c1", "queued", 1)],
        all_campaigns=False,
    )
    assert [c["id"] for c in sc.build(inputs).campaigns] == ["c1"]


placements = st.lists(
    st.builds(
        sc.Placement,
        st.sampled_from(["AC22", "DC150", None]),
        st.sampled_from(["a", "b", None]),
        st.sampled_from(["FR", None]),
        st.integers(min_value=0, max_value=50),
    ),
    max_size=20,
)


@given(placements, st.randoms())
def test_every_breakdown_adds_up_and_ignores_row_order(rows: list[sc.Placement], rnd) -> None:  # type: ignore[no-untyped-def]
    card = sc.build(sc.Inputs(image=IMAGE, placements=rows))
    total = sum(p.count for p in rows)
    for breakdown in (card.by_model, card.by_site, card.by_region):
        assert sum(n for _, n in breakdown) == total == card.running
        assert all(n > 0 for _, n in breakdown)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert sc.build(sc.Inputs(image=IMAGE, placements=shuffled)) == card
