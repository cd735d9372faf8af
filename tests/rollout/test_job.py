"""The job state machine: OCPP status flows, timeouts, and properties over random inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ocpp.v201 import enums as v201_enums

from evota.rollout.job import (
    ON_CHARGER,
    TERMINAL,
    Answered,
    Booted,
    Cancel,
    Created,
    Disconnected,
    Dispatch,
    Failure,
    Faulted,
    Job,
    JobState,
    Method,
    SendFailed,
    StatusReported,
    Tick,
    Timeouts,
    reconcile,
    step,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
T = Timeouts()


def new_job(**kw: object) -> Job:
    base: dict[str, object] = {
        "id": 7,
        "charger_id": "CP-1",
        "target_version": "2.0.0",
        "previous_version": "1.0.0",
    }
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def run(job: Job, *events: object, now: datetime = T0) -> Job:
    for e in events:
        job = step(job, e, now, T).job  # type: ignore[arg-type]
    return job


def sent(job: Job | None = None) -> Job:
    job = run(job or new_job(), Created(), Dispatch())
    assert job.state is JobState.SENDING
    return job


def test_plain_update_succeeds_only_after_booting_the_target_and_staying_healthy():
    job = new_job(signed_available=False)
    job = run(job, Created())
    assert job.state is JobState.QUEUED
    s = step(job, Dispatch(), T0, T)
    assert s.send and s.job.method is Method.PLAIN and s.job.state is JobState.SENDING
    job = run(
        s.job,
        Answered(),
        StatusReported("Downloading"),
        StatusReported("Downloaded"),
        StatusReported("Installing"),
        StatusReported("Installed"),  # before the reboot: not yet success
    )
    assert job.state is JobState.REBOOTING
    job = run(job, Disconnected(), Booted("2.0.0"))
    assert job.state is JobState.VERIFYING
    assert step(job, Tick(), T0 + timedelta(seconds=T.verify - 1), T).job.state is (
        JobState.VERIFYING
    )
    done = step(job, Tick(), T0 + timedelta(seconds=T.verify), T).job
    assert done.state is JobState.SUCCEEDED and done.failure is None


def test_signed_flow_maps_every_status():
    job = sent(new_job(signed_available=True))
    assert job.method is Method.SIGNED
    states = []
    for status in (
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "Installing",
        "InstallRebooting",
    ):
        job = run(job, StatusReported(status, request_id=7) if states else Answered("Accepted"))
        job = run(job, StatusReported(status, request_id=7))
        states.append(job.state)
    assert states == [
        JobState.DOWNLOADING,
        JobState.DOWNLOADED,
        JobState.SIGNATURE_VERIFIED,
        JobState.SIGNATURE_VERIFIED,  # InstallScheduled only extends the deadline
        JobState.INSTALLING,
        JobState.REBOOTING,
    ]


def test_status_for_another_request_is_ignored():
    job = run(sent(), Answered())
    s = step(job, StatusReported("DownloadFailed", request_id=99), T0, T)
    assert not s.changed and s.job.state is JobState.ACCEPTED


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        ("DownloadFailed", Failure.DOWNLOAD_FAILED),
        ("InvalidSignature", Failure.INVALID_SIGNATURE),
        ("InstallationFailed", Failure.INSTALLATION_FAILED),
        ("InstallVerificationFailed", Failure.INSTALL_VERIFICATION_FAILED),
    ],
)
def test_failure_statuses(status, failure):
    job = run(sent(), Answered(), StatusReported("Downloading"), StatusReported(status))
    assert job.state is JobState.FAILED and job.failure is failure


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        ("Rejected", Failure.REJECTED),
        ("InvalidCertificate", Failure.INVALID_SIGNATURE),
        ("RevokedCertificate", Failure.INVALID_SIGNATURE),
    ],
)
def test_refusing_answers(answer, failure):
    job = run(sent(), Answered(answer))
    assert job.state is JobState.FAILED and job.failure is failure


def test_accepted_canceled_is_accepted():
    assert run(sent(), Answered("AcceptedCanceled")).state is JobState.ACCEPTED


def test_accepted_canceled_overtaken_by_status_reports_still_says_so():
    """2.0.1: the charger's first status reports may be handled before its answer."""
    job = run(sent(), StatusReported("Downloading"))
    state = job.state
    job = run(job, Answered("AcceptedCanceled"))
    assert job.state is state
    assert "cancelled the update it had in progress" in (job.detail or "")


def test_booting_previous_version_after_install_is_its_own_failure():
    job = run(sent(), Answered(), StatusReported("Downloaded"), StatusReported("Installing"))
    job = run(job, Disconnected(), Booted("1.0.0"))
    assert job.failure is Failure.BOOTED_PREVIOUS_VERSION
    other = run(sent(), Answered(), StatusReported("Installing"), Booted("9.9.9"))
    assert other.failure is Failure.INSTALL_VERIFICATION_FAILED


def test_reboot_before_install_keeps_waiting():
    job = run(sent(), Answered(), StatusReported("Downloading"), Booted("1.0.0"))
    assert job.state is JobState.DOWNLOADING


def test_faulted_while_verifying_is_unhealthy_but_not_before():
    job = run(sent(), Answered(), Booted("2.0.0"))
    assert job.state is JobState.VERIFYING
    assert run(job, Faulted(1)).failure is Failure.UNHEALTHY
    assert run(sent(), Answered(), Faulted(1)).state is JobState.ACCEPTED


def test_signed_not_supported_falls_back_to_plain_and_back():
    job = sent(new_job(signed_available=True))
    job = run(job, SendFailed("callerror", "NotImplemented"))
    assert job.state is JobState.QUEUED and job.method is Method.PLAIN
    s = step(job, Dispatch(), T0, T)
    assert s.send and s.job.method is Method.PLAIN
    # A plain-refusing charger with an unsigned image: nothing left to try.
    unsigned = sent(new_job(signed_available=False))
    assert run(unsigned, SendFailed("callerror", "NotSupported")).failure is Failure.REJECTED


def test_201_not_supported_is_a_refusal_not_a_switch():
    """2.0.1 has one UpdateFirmware, signed or not: no method fallback dance there."""
    job = sent(new_job(signed_available=True, fallback=False))
    assert job.method is Method.SIGNED
    for code in ("NotSupported", "NotImplemented"):
        failed = run(job, SendFailed("callerror", code))
        assert (failed.state, failed.failure, failed.method) == (
            JobState.FAILED,
            Failure.REJECTED,
            Method.SIGNED,
        )
    plain = sent(new_job(signed_available=False, fallback=False))
    assert plain.method is Method.PLAIN


@pytest.mark.parametrize("status", [s.value for s in v201_enums.FirmwareStatusEnumType])
def test_every_201_firmware_status_is_understood(status):
    """Each 2.0.1 FirmwareStatusNotification status moves the job, fails it, or extends its
    phase; only Idle (the answer to a TriggerMessage when nothing runs) carries nothing."""
    job = run(sent(new_job(fallback=False)), Answered(), StatusReported("Downloading", 7))
    s = step(job, StatusReported(status, 7), T0 + timedelta(seconds=5), T)
    if status == "Idle":
        assert not s.changed
    else:
        assert s.changed, (status, s.note)


@pytest.mark.parametrize("answer", [s.value for s in v201_enums.UpdateFirmwareStatusEnumType])
def test_every_201_update_answer_is_understood(answer):
    job = run(sent(new_job(fallback=False)), Answered(answer))
    if answer in ("Accepted", "AcceptedCanceled"):
        assert job.state is JobState.ACCEPTED
    else:
        assert job.state is JobState.FAILED and job.failure in (
            Failure.REJECTED,
            Failure.INVALID_SIGNATURE,
        )
    if answer == "AcceptedCanceled":
        assert job.detail and "cancelled" in job.detail


def test_boot_reason_does_not_change_the_verdict():
    job = run(sent(), Answered(), StatusReported("Installing"))
    for reason in (None, "FirmwareUpdate", "PowerUp"):
        assert run(job, Booted("2.0.0", reason)).state is JobState.VERIFYING
        assert run(job, Booted("1.0.0", reason)).failure is Failure.BOOTED_PREVIOUS_VERSION


def test_offline_does_not_count_as_an_attempt_but_timeouts_do():
    job = sent()
    job = run(job, SendFailed("offline"))
    assert job.state is JobState.QUEUED and job.attempts == 0
    for _ in range(T.max_attempts - 1):
        job = run(job, Dispatch(), SendFailed("timeout"))
        assert job.state is JobState.QUEUED
    job = run(job, Dispatch(), SendFailed("timeout"))
    assert job.failure is Failure.TIMED_OUT


@pytest.mark.parametrize(
    ("prefix", "seconds", "detail"),
    [
        ([], T.answer, None),  # sending -> re-queued, not failed
        ([Answered()], T.download_start, "download never started"),
        ([Answered(), StatusReported("Downloading")], T.download, "download stalled"),
        (
            [Answered(), StatusReported("Installing")],
            T.install,
            "install took too long",
        ),
        (
            [Answered(), StatusReported("InstallRebooting")],
            T.reboot,
            "reboot never came back",
        ),
    ],
)
def test_phase_timeouts(prefix, seconds, detail):
    job = run(sent(), *prefix)
    assert step(job, Tick(), T0 + timedelta(seconds=seconds - 1), T).job == job
    after = step(job, Tick(), T0 + timedelta(seconds=seconds), T).job
    if detail is None:
        assert after.state is JobState.QUEUED
    else:
        assert after.failure is Failure.TIMED_OUT and after.detail == detail


def test_retrieve_at_schedules_then_queues():
    later = T0 + timedelta(hours=1)
    job = run(new_job(retrieve_at=later), Created())
    assert job.state is JobState.SCHEDULED
    assert not step(job, Dispatch(), T0, T).send
    job = step(job, Tick(), later, T).job
    assert job.state is JobState.QUEUED
    assert step(job, Dispatch(), later, T).send


def test_status_overtaking_the_answer_counts_as_accepted():
    job = run(sent(), StatusReported("Downloading"), Answered("Accepted"))
    assert job.state is JobState.DOWNLOADING


def test_cannot_cancel_an_update_the_charger_holds():
    job = run(sent(), Answered())
    s = step(job, Cancel(), T0, T)
    assert not s.changed and s.job.state is JobState.ACCEPTED


def test_cancel_and_terminal_absorb():
    job = run(new_job(), Created(), Cancel())
    assert job.state is JobState.CANCELLED
    assert run(job, Dispatch(), Booted("2.0.0")).state is JobState.CANCELLED


def test_reconcile_after_restart():
    sending = sent()
    assert reconcile(sending, "1.0.0", T0, T).job.state is JobState.QUEUED
    installing = run(sending, Answered(), StatusReported("Installing"))
    assert reconcile(installing, "2.0.0", T0, T).job.state is JobState.VERIFYING
    assert not reconcile(installing, "1.0.0", T0, T).changed


def test_rejected_resend_after_restart_waits_for_the_earlier_request():
    """evota died between the charger's Accepted and writing it down: the job is resent after
    the restart and the charger, installing our first request, answers Rejected. The job
    follows that install to success instead of failing a charger that updated."""
    resent = run(reconcile(sent(), "1.0.0", T0, T).job, Dispatch())
    assert resent.state is JobState.SENDING and resent.attempts == 2
    busy = run(resent, Answered("Rejected"))
    assert busy.state is JobState.ACCEPTED and busy.failure is None
    assert busy.deadline == T0 + timedelta(seconds=T.download_start)
    assert "busy" in (busy.detail or "")
    done = run(busy, StatusReported("Installing", request_id=7), Booted("2.0.0"))
    assert done.state is JobState.VERIFYING
    late = T0 + timedelta(seconds=T.download_start + 1)
    assert step(busy, Tick(), late, T).job.failure is Failure.TIMED_OUT  # not ours after all
    # The first request's Rejected is a refusal, as before.
    assert run(sent(), Answered("Rejected")).failure is Failure.REJECTED


# -- properties -----------------------------------------------------------------------------

STATUSES = [
    "Downloading",
    "Downloaded",
    "DownloadFailed",
    "DownloadScheduled",
    "DownloadPaused",
    "SignatureVerified",
    "InvalidSignature",
    "InstallScheduled",
    "InstallRebooting",
    "Installing",
    "Installed",
    "InstallationFailed",
    "InstallVerificationFailed",
    "Idle",
    "Bogus",
]
inputs = st.one_of(
    st.just(Created()),
    st.just(Dispatch()),
    st.sampled_from(
        [
            "Accepted",
            "Rejected",
            "AcceptedCanceled",
            "InvalidCertificate",
            "RevokedCertificate",
            "Weird",
        ]
    ).map(Answered),
    st.builds(
        SendFailed,
        st.sampled_from(["offline", "timeout", "callerror"]),
        st.sampled_from([None, "NotSupported", "NotImplemented", "InternalError"]),
    ),
    st.builds(StatusReported, st.sampled_from(STATUSES), st.sampled_from([None, 7, 8])),
    st.builds(
        Booted,
        st.sampled_from([None, "1.0.0", "2.0.0", "3.0.0"]),
        st.sampled_from([None, "FirmwareUpdate", "PowerUp"]),
    ),
    st.just(Disconnected()),
    st.builds(Faulted, st.integers(0, 2)),
    st.just(Tick()),
    st.just(Cancel()),
)
timed = st.lists(st.tuples(inputs, st.integers(0, 4000)), max_size=40)


@settings(max_examples=400, deadline=None)
@given(timed, st.booleans(), st.booleans())
@example(  # found by CI: a status report overtaking the answer, then the boot
    [(Dispatch(), 0), (StatusReported("Downloading"), 0), (Booted("2.0.0"), 0), (Tick(), 30)],
    False,
    True,
)
def test_invariants_hold_for_any_input_sequence(sequence, signed, fallback):
    job = run(new_job(signed_available=signed, fallback=fallback), Created())
    now = T0
    booted_target_after_accept = False
    accepted = False
    for event, dt in sequence:
        now += timedelta(seconds=dt)
        before = job
        s = step(job, event, now, T)
        job = s.job
        if before.terminal:  # terminal states absorb everything
            assert job == before and not s.changed
        if s.send:
            assert job.state is JobState.SENDING and job.method is not None
        if not fallback and before.method is not None:
            assert job.method is before.method  # 2.0.1: the method is chosen once
        if not signed:
            assert job.method in (None, Method.PLAIN)  # never a signature the image lacks
        if job.state is JobState.FAILED:
            assert job.failure is not None and job.detail
        else:
            assert job.failure is None
        if not job.terminal:  # nothing waits forever
            assert job.deadline is not None
        if before.state is JobState.SENDING and job.state in ON_CHARGER:
            accepted = True  # an answer, or a status report that overtook it
        if (
            isinstance(event, Booted)
            and event.firmware_version == "2.0.0"
            and before.state in ON_CHARGER
        ):
            booted_target_after_accept = True
        if job.state is JobState.SUCCEEDED and before.state is not JobState.SUCCEEDED:
            # success is proven only by a boot on the target after the charger took the job
            assert accepted and booted_target_after_accept
            assert before.state is JobState.VERIFYING


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(STATUSES), max_size=30))
def test_status_reports_never_move_backwards(statuses):
    rank = {s: i for i, s in enumerate(JobState)}
    job = run(sent(), Answered())
    for status in statuses:
        before = job
        job = step(job, StatusReported(status), T0, T).job
        if job.state not in TERMINAL and before.state not in TERMINAL:
            assert rank[job.state] >= rank[before.state]
