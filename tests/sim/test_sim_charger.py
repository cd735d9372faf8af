"""SimulatedCharger against the throwaway CSMS in conftest: the OCPP 1.6J client behaviour."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from evota.ocpp import rpc
from evota.ocpp.errors import RpcError
from evota.ocpp.schemas import v16
from evota.sim import control, firmware
from evota.sim.charger import Reply, SimConfig, SimulatedCharger, handles
from evota.sim.runner import wait_until
from evota.sim.v16 import HANDLERS
from evota.sim.v201 import V201_HANDLERS

from .conftest import NEVER, CallErrorAnswer, FakeCsms, fast, spec


@asynccontextmanager
async def running(
    csms: FakeCsms, identity: str = "CP-1", config: SimConfig | None = None, **kw: Any
) -> AsyncIterator[SimulatedCharger]:
    charger = SimulatedCharger(spec(identity, **kw), csms.url, config or fast())
    charger.start()
    try:
        yield charger
    finally:
        await charger.stop()


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def statuses(csms: FakeCsms, connector: int) -> list[str]:
    return [
        p["status"] for p in csms.payloads("StatusNotification") if p["connectorId"] == connector
    ]


async def test_boots_reports_every_connector_and_heartbeats_at_the_csms_interval(
    csms: FakeCsms,
) -> None:
    csms.interval = 60  # 10 ms at test speed
    async with running(csms, vendor="Acme", model="AC22", firmware_version="2.3.1") as c:
        await wait_until(lambda: len(csms.payloads("Heartbeat")) >= 5, 3)
        assert c.connected and c.accepted and c.boot_status == "Accepted"
        assert c.heartbeat_interval == 60
        boot = csms.payloads("BootNotification")
        assert boot == [
            {
                "chargePointVendor": "Acme",
                "chargePointModel": "AC22",
                "chargePointSerialNumber": "SN-CP-1",
                "firmwareVersion": "2.3.1",
            }
        ]
        assert csms.actions()[0] == "BootNotification"
        assert [statuses(csms, n) for n in (0, 1, 2)] == [["Available"]] * 3
        assert c.stats.calls_sent["Heartbeat"] >= 5
        # the CSMS has seen the 5th heartbeat; its answer may still be on the way back
        await wait_until(lambda: c.stats.messages_received >= c.stats.messages_sent >= 9, 3)
    assert csms.invalid == [] and csms.overlaps == 0


async def test_a_long_csms_interval_means_no_early_heartbeats(csms: FakeCsms) -> None:
    csms.interval = 6000  # 1 s at test speed
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        await asyncio.sleep(0.3)
        assert csms.payloads("Heartbeat") == []


async def test_wrong_key_gets_401_and_the_charger_keeps_retrying(csms: FakeCsms) -> None:
    async with running(csms, auth_key="not-the-right-key-at-all") as c:
        await wait_until(lambda: c.stats.connect_failures >= 4, 5)
        assert not c.connected and c.boot_status is None
        assert c.stats.last_http_status == 401 and c.stats.last_error == "HTTP 401"
    assert csms.received == []
    assert {status for _, status, _ in csms.handshakes} == {401}
    times = [t for _, _, t in csms.handshakes]
    assert times[-1] - times[0] >= 0.05 * 1.5 * 0.5  # not a tight loop: backoff in between


def test_reconnect_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    charger = SimulatedCharger(spec(), "ws://unused", fast(backoff_initial=1.0, backoff_max=8.0))
    delays = [charger._backoff() for _ in range(8)]
    for delay, cap in zip(delays, [1, 2, 4, 8, 8, 8, 8, 8], strict=True):
        assert cap / 2 <= delay <= cap
    assert len(set(delays)) == len(delays)  # jittered, so a fleet does not reconnect in step
    charger._failures = 0  # what an accepted boot does
    assert charger._backoff() <= 1


async def test_unknown_identity_gets_404(csms: FakeCsms) -> None:
    csms.keys = {"someone-else": "x" * 16}
    async with running(csms) as c:
        await wait_until(lambda: c.stats.connect_failures >= 1, 3)
        assert c.stats.last_http_status == 404 and not c.connected


async def test_identity_is_percent_encoded_in_the_url(csms: FakeCsms) -> None:
    async with running(csms, identity="CP#1?x%") as c:
        await wait_until(lambda: c.accepted, 3)
    assert csms.handshakes[0][:2] == ("CP#1?x%", 101)


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
async def test_boot_is_retried_after_the_interval_until_accepted(
    csms: FakeCsms, status: str
) -> None:
    csms.boot_statuses = [status, status]
    csms.interval = 30  # 5 ms
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
    actions = csms.actions()
    assert actions[:3] == ["BootNotification"] * 3
    assert "BootNotification" not in actions[3:]
    assert c.stats.boots_sent == 3 and c.stats.boots_accepted == 1


async def test_nothing_but_boot_is_sent_while_pending(csms: FakeCsms) -> None:
    csms.boot_statuses = ["Pending"] * 1000
    csms.interval = 6  # 1 ms
    async with running(csms) as c:
        await wait_until(lambda: c.stats.boots_sent >= 10, 3)
        assert c.connected and not c.accepted and c.boot_status == "Pending"
    assert set(csms.actions()) == {"BootNotification"}


@pytest.mark.parametrize("kind", ["Soft", "Hard"])
async def test_reset_is_accepted_then_the_charger_reboots_and_boots_again(
    csms: FakeCsms, kind: str
) -> None:
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        answer = await csms.call("CP-1", "Reset", {"type": kind})
        assert isinstance(answer, rpc.CallResult) and answer.payload == {"status": "Accepted"}
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.accepted, 3)
        assert c.stats.reboots == 1 and c.stats.disconnects == 1
        assert c.last_call is not None and c.last_call.action == "Reset"
    assert csms.actions().count("BootNotification") == 2
    assert [s for _, s, _ in csms.handshakes] == [101, 101]


@pytest.mark.parametrize(("kind", "reason"), [("Soft", "SoftReset"), ("Hard", "HardReset")])
async def test_reset_ends_a_running_session(csms: FakeCsms, kind: str, reason: str) -> None:
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        c.begin_session(1, duration=10**9)
        await wait_until(lambda: "Charging" in statuses(csms, 1), 3)
        await csms.call("CP-1", "Reset", {"type": kind})
        await wait_until(lambda: c.stats.boots_accepted == 2 and c.transactions_completed == 1, 3)
        assert c.transactions == {}
    actions = csms.actions()
    stop_at = actions.index("StopTransaction")
    second_boot = [i for i, a in enumerate(actions) if a == "BootNotification"][1]
    # a soft reset stops the session before rebooting; a hard one reports it after the boot
    assert (stop_at < second_boot) == (kind == "Soft")
    [stop] = csms.payloads("StopTransaction")
    [start] = csms.payloads("StartTransaction")
    assert stop["reason"] == reason and stop["meterStop"] >= start["meterStart"]


@pytest.mark.parametrize(
    ("action", "payload", "code"),
    [
        ("FlyToTheMoon", {}, "NotImplemented"),
        ("CancelReservation", {"reservationId": 1}, "NotSupported"),
        ("Reset", {"type": "Medium"}, "PropertyConstraintViolation"),
        ("Reset", {}, "OccurenceConstraintViolation"),
        ("Reset", {"type": 1}, "TypeConstraintViolation"),
        ("Reset", {"type": "Soft", "when": "now"}, "FormationViolation"),
    ],
)
async def test_bad_or_unsupported_calls_get_the_1_6_callerror(
    csms: FakeCsms, action: str, payload: dict[str, Any], code: str
) -> None:
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        answer = await csms.call("CP-1", action, payload)
        assert isinstance(answer, rpc.CallError) and answer.code == code
        assert list(c.stats.errors_sent) == [code]
        assert c.last_call is not None and c.last_call.action == action
        await asyncio.sleep(0.05)
        assert c.accepted and c.stats.reboots == 0


async def test_a_malformed_call_frame_gets_a_callerror(csms: FakeCsms) -> None:
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        answer = await csms.send_raw("CP-1", '[2, "bad-1", "Reset"]', "bad-1")
        result = await asyncio.wait_for(answer, 2)
        assert isinstance(result, rpc.CallError) and result.code == "FormationViolation"


async def test_handlers_are_a_dispatch_table(csms: FakeCsms) -> None:
    calls: list[dict[str, Any]] = []

    async def cancel(charger: SimulatedCharger, call: rpc.Call) -> Reply:
        calls.append(call.payload)
        return Reply({"status": "Accepted"})

    table = dict(HANDLERS)
    handles("CancelReservation", table)(cancel)
    assert "CancelReservation" not in HANDLERS
    charger = SimulatedCharger(spec(), csms.url, fast(), handlers=table)
    charger.start()
    try:
        await wait_until(lambda: charger.accepted, 3)
        answer = await csms.call("CP-1", "CancelReservation", {"reservationId": 2})
        assert isinstance(answer, rpc.CallResult) and answer.payload == {"status": "Accepted"}
        assert calls == [{"reservationId": 2}]
    finally:
        await charger.stop()


def test_the_16_table_routes_each_action_to_its_own_handler() -> None:
    """The 1.6 table is written out by hand: each action goes to the handler named after it,
    every action is a 1.6 (or security extension) one, and no block handler is left unrouted
    (it would never answer)."""
    for action, handler in HANDLERS.items():
        assert handler.__name__ == "on_" + re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()
    assert set(HANDLERS) <= v16().actions
    modules = [firmware] + [
        importlib.import_module(f"{control.__name__}.{m.name}")
        for m in pkgutil.iter_modules(control.__path__)
    ]
    defined = {
        fn
        for module in modules
        for name, fn in vars(module).items()
        if name.startswith("on_") and getattr(fn, "__module__", None) == module.__name__
    }
    routed = {*HANDLERS.values(), *V201_HANDLERS.values()}
    assert len(defined) == 24 and defined <= routed


async def test_a_handler_reply_that_breaks_the_schema_becomes_an_internal_error(
    csms: FakeCsms,
) -> None:
    async def sloppy(charger: SimulatedCharger, call: rpc.Call) -> Reply:
        return Reply({"status": "Maybe"})

    charger = SimulatedCharger(spec(), csms.url, fast(), handlers={"Reset": sloppy})
    charger.start()
    try:
        await wait_until(lambda: charger.accepted, 3)
        answer = await csms.call("CP-1", "Reset", {"type": "Soft"})
        assert isinstance(answer, rpc.CallError) and answer.code == "InternalError"
    finally:
        await charger.stop()


async def test_the_charger_answers_csms_calls_while_its_own_call_is_outstanding(
    csms: FakeCsms,
) -> None:
    crossed: list[Any] = []

    async def hold_heartbeat(identity: str, payload: dict[str, Any]) -> dict[str, Any]:
        # Answer the charger's Heartbeat only after it has answered our CALL.
        crossed.append(await csms.call(identity, "Reset", {"type": "Medium"}))
        return {"currentTime": now()}

    csms.interval = 60
    csms.overrides["Heartbeat"] = hold_heartbeat
    async with running(csms, config=fast(call_timeout=1.0)) as c:
        await wait_until(lambda: len(crossed) >= 2, 3)
        assert all(isinstance(a, rpc.CallError) for a in crossed)
        assert c.stats.call_timeouts == 0


async def test_one_outstanding_call_at_a_time_even_with_sessions_and_heartbeats(
    csms: FakeCsms,
) -> None:
    csms.interval = 20
    csms.answer_delay = 0.002
    config = fast(session_rate=3600.0, session_duration=(120.0, 300.0), meter_interval=10.0)
    async with running(csms, config=config, connectors=3) as c:
        await wait_until(lambda: c.transactions_completed >= 4, 8)
    assert csms.overlaps == 0
    assert csms.invalid == []
    assert len(csms.payloads("StopTransaction")) >= 4


async def test_a_session_goes_through_the_whole_1_6_flow(csms: FakeCsms) -> None:
    csms.interval = 6000
    config = fast(session_duration=(300.0, 300.0), meter_interval=60.0, power_kw=12.0)
    async with running(csms, config=config) as c:
        await wait_until(lambda: c.accepted and statuses(csms, 2) == ["Available"], 3)
        completed = await asyncio.wait_for(c.begin_session(1, id_tag="TAG-1"), 3)
        assert completed and c.transactions_completed == 1
    flow = [
        (a, p.get("status"))
        for _, a, p in csms.received
        if a not in ("BootNotification", "Heartbeat") and p.get("connectorId", 1) == 1
    ]
    assert flow == [
        ("StatusNotification", "Available"),
        ("StatusNotification", "Preparing"),
        ("Authorize", None),
        ("StartTransaction", None),
        ("StatusNotification", "Charging"),
        *[("MeterValues", None)] * 4,
        ("StopTransaction", None),
        ("StatusNotification", "Finishing"),
        ("StatusNotification", "Available"),
    ]
    [start] = csms.payloads("StartTransaction")
    [stop] = csms.payloads("StopTransaction")
    assert start["idTag"] == "TAG-1" and start["connectorId"] == 1
    readings = [
        int(p["meterValue"][0]["sampledValue"][0]["value"]) for p in csms.payloads("MeterValues")
    ]
    assert readings == sorted(set(readings))
    assert start["meterStart"] < readings[0] and readings[-1] < stop["meterStop"]
    assert stop["meterStop"] - start["meterStart"] in (999, 1000)  # 12 kW for 5 minutes
    assert stop["transactionId"] == 100 and stop["reason"] == "EVDisconnected"
    for p in csms.payloads("MeterValues"):
        sample = p["meterValue"][0]["sampledValue"][0]
        assert p["transactionId"] == 100
        assert sample["measurand"] == "Energy.Active.Import.Register" and sample["unit"] == "Wh"
    assert c.stats.energy_wh == stop["meterStop"] - start["meterStart"]


async def test_a_rejected_id_tag_starts_no_transaction(csms: FakeCsms) -> None:
    csms.overrides["Authorize"] = lambda i, p: {"idTagInfo": {"status": "Invalid"}}
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        assert not await asyncio.wait_for(c.begin_session(1), 3)
        assert c.stats.authorize_rejected == 1 and c.transactions == {}
    assert "StartTransaction" not in csms.actions()
    assert statuses(csms, 1)[-1] == "Available"


async def test_a_session_cut_by_a_lost_connection_is_stopped_after_the_next_boot(
    csms: FakeCsms,
) -> None:
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        c.begin_session(2, duration=10**9)
        await wait_until(lambda: "Charging" in statuses(csms, 2), 3)
        await csms.drop("CP-1")
        await wait_until(lambda: c.transactions_completed == 1, 3)
        assert c.stats.disconnects == 1 and c.stats.boots_accepted == 2
    [stop] = csms.payloads("StopTransaction")
    assert stop["reason"] == "PowerLoss" and stop["transactionId"] == 100
    actions = csms.actions()
    assert actions.index("StopTransaction") > actions.index("BootNotification", 1)


async def test_an_invalid_callresult_is_logged_and_counted(csms: FakeCsms) -> None:
    csms.interval = 60
    csms.overrides["Heartbeat"] = lambda i, p: {"currentTime": 42}
    with capture_logs() as logs:
        async with running(csms) as c:
            await wait_until(lambda: c.stats.invalid_results >= 2, 3)
            assert c.accepted
    warnings = [e for e in logs if e["event"] == "invalid CALLRESULT"]
    assert warnings and warnings[0]["action"] == "Heartbeat"
    assert warnings[0]["log_level"] == "warning"


async def test_a_malformed_callresult_fails_the_call_at_once(csms: FakeCsms) -> None:
    csms.interval = 6000
    async with running(csms, config=fast(call_timeout=5.0)) as c:
        await wait_until(lambda: c.accepted, 3)
        csms.overrides["Heartbeat"] = lambda i, p: NEVER
        call = asyncio.create_task(c.call("Heartbeat", {}))
        await wait_until(lambda: c._pending is not None, 2)
        message_id = c._pending[0] if c._pending else ""
        await csms.links["CP-1"].ws.send(orjson.dumps([3, message_id]).decode())
        with pytest.raises(Exception, match="CALLRESULT must be"):
            await asyncio.wait_for(call, 1)
        assert c.stats.invalid_results == 1 and c.stats.call_timeouts == 0


async def test_callerrors_received_are_recorded(csms: FakeCsms) -> None:
    csms.interval = 60
    csms.overrides["Heartbeat"] = lambda i, p: CallErrorAnswer("GenericError")
    async with running(csms) as c:
        await wait_until(lambda: len(c.stats.callerrors) >= 2, 3)
        assert set(c.stats.callerrors) == {"GenericError"} and c.accepted


async def test_an_unanswered_call_times_out_and_the_charger_carries_on(csms: FakeCsms) -> None:
    csms.interval = 60
    csms.overrides["Heartbeat"] = lambda i, p: NEVER
    async with running(csms, config=fast(call_timeout=0.05)) as c:
        await wait_until(lambda: c.stats.call_timeouts >= 3, 3)
        assert c.accepted
    assert csms.overlaps == 0


async def test_the_charger_validates_what_it_sends(csms: FakeCsms) -> None:
    async with running(csms) as c:
        await wait_until(lambda: c.accepted, 3)
        sent = c.stats.messages_sent
        with pytest.raises(RpcError):
            await c.call("StatusNotification", {"connectorId": 1, "status": "Dancing"})
        assert c.stats.messages_sent == sent


async def test_stop_closes_the_connection_and_ends_all_tasks(csms: FakeCsms) -> None:
    charger = SimulatedCharger(spec(), csms.url, fast(session_rate=3600.0))
    task = charger.start()
    await wait_until(lambda: charger.accepted and "CP-1" in csms.links, 3)
    await charger.stop()
    assert task.done() and not charger.connected and not charger._tasks
    await wait_until(lambda: "CP-1" not in csms.links, 2)
