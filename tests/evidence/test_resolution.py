"""Remote-resolution analytics, pure: definitions by example, then properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from evota.evidence import resolution as rs
from evota.evidence.resolution import (
    Action,
    ChargerFacts,
    GroupBy,
    SessionStart,
    StatusReport,
)
from evota.rollout.gate import wilson_lower

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
W = timedelta(minutes=30)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def st_(
    cid: str, connector: int, status: str, minutes: float, code: str = "NoError"
) -> StatusReport:
    return StatusReport(cid, connector, status, code, at(minutes))


def faulted_charger(cid: str = "CP-1") -> list[StatusReport]:
    return [
        st_(cid, 1, "Faulted", -60, "GroundFailure"),
        st_(cid, 2, "Available", -60),
    ]


LATER = at(60 * 24 * 30)  # everything decided and followed


def one(
    reports: list[StatusReport],
    sessions: list[SessionStart],
    now: datetime = LATER,
    actions: list[Action] | None = None,
) -> rs.Judged:
    acts = actions or [Action("CP-1", at(0), "reset")]
    return rs.judge(acts, reports, sessions, now, W)[0]


def test_recovered_and_took_a_session_within_the_window_is_resolved() -> None:
    reports = [*faulted_charger(), st_("CP-1", 1, "Available", 3)]
    j = one(reports, [SessionStart("CP-1", at(10))])
    assert j.faulted_before and j.error_code == "GroundFailure"
    assert j.resolved_at == at(10)  # the later of operative (3) and the session (10)
    assert j.seconds_to_resolution == 600
    assert j.followed and not j.repeat_fault


def test_a_session_stamped_in_the_actions_own_second_counts() -> None:
    """Chargers stamp sessions in whole seconds: 08:00:00 is not before a reset at 08:00:00.6."""
    reset = Action("CP-1", T0 + timedelta(milliseconds=600), "reset")
    reports = [*faulted_charger(), st_("CP-1", 1, "Available", 0.02)]
    j = one(reports, [SessionStart("CP-1", T0)], actions=[reset])
    assert j.resolved_at == at(0.02)  # operative then; the session was stamped before
    assert not one(reports, [SessionStart("CP-1", at(-0.02))], actions=[reset]).resolved


def test_recovered_without_a_session_is_not_resolved() -> None:
    reports = [*faulted_charger(), st_("CP-1", 1, "Available", 3)]
    j = one(reports, [])
    assert j.decided and not j.resolved


def test_session_after_the_window_does_not_count() -> None:
    reports = [*faulted_charger(), st_("CP-1", 1, "Available", 3)]
    assert not one(reports, [SessionStart("CP-1", at(31))]).resolved
    assert one(reports, [SessionStart("CP-1", at(30))]).resolved  # the end is inclusive


def test_one_connector_still_faulted_is_not_resolved() -> None:
    reports = [*faulted_charger(), st_("CP-1", 2, "Charging", 5)]
    assert not one(reports, [SessionStart("CP-1", at(5))]).resolved


def test_connector_zero_faulted_blocks_resolution() -> None:
    reports = [
        *faulted_charger(),
        st_("CP-1", 0, "Faulted", 2, "OtherError"),
        st_("CP-1", 1, "Available", 3),
    ]
    assert not one(reports, [SessionStart("CP-1", at(5))]).resolved


def test_a_charger_that_was_not_faulted_is_counted_apart() -> None:
    reports = [st_("CP-1", 1, "Available", -60), st_("CP-1", 2, "Available", -60)]
    j = one(reports, [SessionStart("CP-1", at(5))])
    assert not j.faulted_before and not j.resolved
    row = rs.summarize("x", [j])
    assert row.no_fault_before == 1 and row.faulted == 0 and row.resolution_rate is None


def test_a_report_at_the_action_time_is_not_before_it() -> None:
    reports = [st_("CP-1", 1, "Available", -60), st_("CP-1", 1, "Faulted", 0, "X")]
    assert not one(reports, []).faulted_before


def test_open_window_is_pending_until_it_ends() -> None:
    reports = faulted_charger()
    j = one(reports, [], now=at(10))
    assert j.faulted_before and not j.decided
    row = rs.summarize("x", [j])
    assert row.pending == 1 and row.faulted == 0
    assert one(reports, [], now=at(30)).decided


def test_a_later_action_takes_the_credit() -> None:
    reports = [*faulted_charger(), st_("CP-1", 1, "Available", 12)]
    acts = [Action("CP-1", at(0), "unlock-connector"), Action("CP-1", at(10), "reset")]
    first, second = rs.judge(acts, reports, [SessionStart("CP-1", at(15))], LATER, W)
    assert first.decided and not first.resolved
    assert second.resolved_at == at(15)


def test_repeat_fault_within_seven_days_after_resolution() -> None:
    reports = [
        *faulted_charger(),
        st_("CP-1", 1, "Available", 3),
        st_("CP-1", 2, "Faulted", 60 * 24 * 6, "PowerMeterFailure"),
    ]
    j = one(reports, [SessionStart("CP-1", at(5))])
    assert j.resolved and j.followed and j.repeat_fault
    later = [*reports[:3], st_("CP-1", 2, "Faulted", 60 * 24 * 8)]
    assert not one(later, [SessionStart("CP-1", at(5))]).repeat_fault


def test_repeat_rate_waits_for_the_follow_up_to_end() -> None:
    reports = [*faulted_charger(), st_("CP-1", 1, "Available", 3)]
    j = one(reports, [SessionStart("CP-1", at(5))], now=at(60))
    assert j.resolved and not j.followed
    assert rs.summarize("x", [j]).repeat_rate is None


def test_report_groups_rates_intervals_and_money() -> None:
    reports = [
        *faulted_charger("CP-1"),
        st_("CP-1", 1, "Available", 2),
        *faulted_charger("CP-2"),
    ]
    acts = [Action("CP-1", at(0), "reset"), Action("CP-2", at(0), "reset")]
    facts = {"CP-1": ChargerFacts("AC22", "Acme", "s1"), "CP-2": ChargerFacts("AC22", "Acme", None)}
    out = rs.report(
        acts,
        reports,
        [SessionStart("CP-1", at(4))],
        facts,
        LATER,
        GroupBy.SITE,
        W,
        truck_roll_cost=150.0,
    )
    assert [(r.key, r.actions, r.resolved) for r in out.rows] == [("(unknown)", 1, 0), ("s1", 1, 1)]
    t = out.total
    assert (t.faulted, t.resolved, t.resolution_rate) == (2, 1, 0.5)
    assert t.resolution_low == wilson_lower(1, 2) and t.resolution_high == 1 - wilson_lower(1, 2)
    assert t.median_seconds == t.p90_seconds == 240
    assert t.truck_rolls_avoided == 1 and t.money_saved == 150.0
    by_code = rs.report(acts, reports, [], facts, LATER, GroupBy.ERROR_CODE, W)
    assert [r.key for r in by_code.rows] == ["GroundFailure"]


def test_reached_charger() -> None:
    assert rs.reached_charger("Accepted") and rs.reached_charger("Rejected")
    assert rs.reached_charger("error:timeout") and rs.reached_charger(
        "error:callerror:NotSupported"
    )
    assert not rs.reached_charger("error:offline") and not rs.reached_charger("error:unsupported")
    assert not rs.reached_charger("error")


# -- properties ------------------------------------------------------------------------------

CHARGERS = ("A", "B", "C")
STATUSES = ("Available", "Faulted", "Charging", "Unavailable", "Preparing")

minutes = st.integers(min_value=-120, max_value=60 * 24 * 10)
reports_st = st.lists(
    st.builds(
        lambda cid, c, s, m, code: StatusReport(cid, c, s, code, at(m)),
        st.sampled_from(CHARGERS),
        st.integers(0, 2),
        st.sampled_from(STATUSES),
        minutes,
        st.sampled_from(("NoError", "GroundFailure", "OtherError")),
    ),
    max_size=40,
)
actions_st = st.lists(
    st.builds(
        lambda cid, m, k: Action(cid, at(m), k),
        st.sampled_from(CHARGERS),
        st.integers(min_value=0, max_value=600),
        st.sampled_from(("reset", "unlock-connector", "change-availability")),
    ),
    max_size=15,
)
sessions_st = st.lists(
    st.builds(lambda cid, m: SessionStart(cid, at(m)), st.sampled_from(CHARGERS), minutes),
    max_size=15,
)
facts_st = st.fixed_dictionaries(
    {
        c: st.builds(
            ChargerFacts,
            st.sampled_from(("M1", "M2", None)),
            st.sampled_from(("V1", None)),
            st.sampled_from(("s1", "s2", None)),
        )
        for c in CHARGERS
    }
)
now_st = st.integers(min_value=0, max_value=60 * 24 * 20).map(at)
group_st = st.sampled_from(list(GroupBy))
window_st = st.integers(min_value=1, max_value=24 * 60).map(lambda m: timedelta(minutes=m))


def _counts(row: rs.ResolutionRow) -> tuple[int, ...]:
    return (
        row.actions,
        row.no_fault_before,
        row.pending,
        row.faulted,
        row.resolved,
        row.followed,
        row.repeat_faults,
        row.truck_rolls_avoided,
    )


@given(actions_st, reports_st, sessions_st, facts_st, now_st, group_st, window_st)
def test_rates_are_bounded_and_counts_consistent(
    actions, reports, sessions, facts, now, group_by, window
) -> None:
    out = rs.report(actions, reports, sessions, facts, now, group_by, window)
    for row in [*out.rows, out.total]:
        assert row.resolved <= row.faulted <= row.actions
        assert row.no_fault_before + row.pending + row.faulted == row.actions
        assert row.repeat_faults <= row.followed <= row.resolved
        for rate, low, high in (
            (row.resolution_rate, row.resolution_low, row.resolution_high),
            (row.repeat_rate, row.repeat_low, row.repeat_high),
        ):
            assert 0.0 <= low <= high <= 1.0
            if rate is not None:
                assert 0.0 <= rate <= 1.0 and low <= rate <= high
        if row.median_seconds is not None:
            assert row.p90_seconds is not None
            assert 0 <= row.median_seconds <= row.p90_seconds <= window.total_seconds()


@given(actions_st, reports_st, sessions_st, facts_st, now_st, group_st)
def test_groups_sum_to_the_total(actions, reports, sessions, facts, now, group_by) -> None:
    out = rs.report(actions, reports, sessions, facts, now, group_by, W)
    summed = [sum(col) for col in zip(*(_counts(r) for r in out.rows), strict=True)] or [0] * 8
    assert tuple(summed) == _counts(out.total)
    assert len({r.key for r in out.rows}) == len(out.rows)


@given(actions_st, reports_st, sessions_st, facts_st, now_st, group_st, reports_st, sessions_st)
def test_an_unrelated_chargers_events_change_nothing(
    actions, reports, sessions, facts, now, group_by, other_reports, other_sessions
) -> None:
    """Reports and sessions of a charger without actions (Z) leave every number as it was."""
    base = rs.report(actions, reports, sessions, facts, now, group_by, W)
    noise_r = [
        StatusReport("Z", r.connector_id, r.status, r.error_code, r.at) for r in other_reports
    ]
    noise_s = [SessionStart("Z", s.at) for s in other_sessions]
    noisy = rs.report(actions, [*noise_r, *reports], [*sessions, *noise_s], facts, now, group_by, W)
    assert noisy == base


@given(actions_st, reports_st, sessions_st, now_st, reports_st, sessions_st)
def test_another_chargers_actions_do_not_change_a_chargers_verdicts(
    actions, reports, sessions, now, other_reports, other_sessions
) -> None:
    """Adding a charger (Z) with its own actions and events changes no other action's verdict."""
    base = rs.judge(actions, reports, sessions, now, W)
    extra_a = [Action("Z", at(5), "reset")]
    extra_r = [
        StatusReport("Z", r.connector_id, r.status, r.error_code, r.at) for r in other_reports
    ]
    extra_s = [SessionStart("Z", s.at) for s in other_sessions]
    both = rs.judge([*actions, *extra_a], [*reports, *extra_r], [*sessions, *extra_s], now, W)
    assert both[: len(actions)] == base
