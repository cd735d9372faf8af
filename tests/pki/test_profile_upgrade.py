"""Security profile upgrades without lock-outs (issue 16 §4, evota.control.profile_upgrades),
through the simulator on OCPP 1.6: 1 → 2 (the CSMS root installed first, the charger back over
wss, plain ws refused afterwards), 2 → 3 (after a renewal, back with its certificate), and a
charger that never reconnects after the switch: evota keeps its old profile, so it can still
come back the old way, and raises an alert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evota.control import profile_upgrade as plan
from evota.pki import inventory as inv
from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger
from evota.sim.control import network
from evota.sim.control.state import state
from evota.sim.fleet import ChargerSpec, FaultProfile
from evota.store.models import Charger
from tests.conftest import api_client, connect, provision, session_for, start_runtime
from tests.gateway.test_tls import status_of
from tests.pki_fixtures import CHARGER_ID, CPO, Pki
from tests.sim.conftest import fast
from tests.support import until
from tests.test_cli import invoke

KEY = "upgrade-key-0123456789"


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str, pki: Pki) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_tls_port=0,
        ocpp_tls_cert=pki.server.cert_path,
        ocpp_tls_key=pki.server.key_path,
        ocpp_charger_ca=pki.charger_ca,
        cpo_name=CPO,
        ca_cert=pki.charger_ca,
        ca_key=pki.charger_ca_key,
    )
    yield runtime
    await runtime.stop()


def sim(rt: Runtime, identity: str = CHARGER_ID, **kw: Any) -> SimulatedCharger:
    spec = ChargerSpec(identity, KEY, organization=CPO, **kw)
    return SimulatedCharger(
        spec,
        f"ws://127.0.0.1:{rt.ocpp_port}/ocpp",
        fast(),
        tls_url=f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp",
    )


async def upgrade(rt: Runtime, profile: int, **body: Any) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.post(
            f"/api/v1/chargers/{CHARGER_ID}/security-profile/upgrade",
            json={"profile": profile, **body},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


async def stored_profile(rt: Runtime) -> int:
    async with rt.engine.connect() as conn:
        return int(
            (
                await conn.execute(select(Charger.security_profile).where(Charger.id == CHARGER_ID))
            ).scalar_one()
        )


def test_the_rules(pki: Pki) -> None:
    assert plan.refusal(None, 1, 2, False) == "the charger is not connected"
    assert plan.refusal("ocpp2.0.1", 1, 2, False) is None
    assert "not supported" in (plan.refusal("ocpp2.1", 1, 2, False) or "")
    assert "already on profile 2" in (plan.refusal("ocpp1.6", 2, 2, True) or "")
    assert "renew it first" in (plan.refusal("ocpp1.6", 2, 3, False) or "")
    assert plan.refusal("ocpp1.6", 1, 2, False) is None
    assert plan.refusal("ocpp1.6", 2, 3, True) is None
    root = pki.server_ca.read_bytes()
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(root)
    h = inv.hash_data(cert, cert)
    listed = {
        "hash_algorithm": "sha256",
        "issuer_name_hash": h.issuer_name_hash.upper(),
        "issuer_key_hash": h.issuer_key_hash,
        "serial_number": h.serial.upper(),
    }
    assert plan.holds([listed], h) and not plan.holds([{"junk": 1}], h)
    assert plan.reconnected(2, 3) and not plan.reconnected(3, 2)
    # 2.0.1 (A05): a free slot for the new profile, the one in use kept behind it
    assert plan.network_slots("0") == (1, 0) and plan.network_slots("1,0") == (2, 1)
    assert plan.network_slots("2,0,1") == (3, 2)
    for bad in (None, "", "x", "1,,0", "-1"):
        assert plan.network_slots(bad) is None, bad
    assert plan.new_priority(1, 0) == "1,0"


async def test_upgrade_1_to_2_installs_the_root_and_then_refuses_plain_ws(
    rt: Runtime, pki: Pki
) -> None:
    await provision(rt, CHARGER_ID, KEY)
    charger = sim(rt)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        assert charger.csms_roots() == []
        # The console: the upgrade form for a role with charger.write, not for a viewer.
        for role, form in (("security_admin", True), ("viewer", False)):
            session = await session_for(rt, role, [role])
            async with api_client(rt, None) as web:
                web.cookies.set("evota_session", session)
                page = await web.get(f"/console/chargers/{CHARGER_ID}")
            assert page.status_code == 200 and ('id="upgrade-profile"' in page.text) is form
        answer = await upgrade(rt, 2, root=pki.server_ca.read_text(), deadline_seconds=20)
        assert answer["state"] == "upgraded", answer
        assert charger.csms_roots() == [pki.server_ca.read_text()]
        assert charger.security_profile == 2 and charger.connect_url.startswith("wss://")
        assert await stored_profile(rt) == 2
        await charger.stop()
        assert await status_of(connect(rt, CHARGER_ID, KEY)) in (401, 403)  # ws:// refused
    finally:
        await charger.stop()


async def test_upgrade_2_to_3_after_a_renewal_reconnects_with_the_certificate(
    rt: Runtime, pki: Pki
) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=2)
    charger = sim(rt, ocpp_ca=(pki.server_ca.read_text(),), security_profile=2)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        async with api_client(rt) as api:
            refused = await api.post(
                f"/api/v1/chargers/{CHARGER_ID}/security-profile/upgrade", json={"profile": 3}
            )
            assert refused.status_code == 409 and "renew" in refused.json()["detail"]
            r = await api.post(f"/api/v1/chargers/{CHARGER_ID}/certificates/renew", json={})
            assert r.status_code == 200, r.text
        await until(lambda: charger.stats.certificates_installed == 1 and charger.accepted)
        await rt.certificates.settled()
        answer = await upgrade(rt, 3, deadline_seconds=20)
        assert answer["state"] == "upgraded", answer
        assert await stored_profile(rt) == 3 and charger.security_profile == 3
    finally:
        await charger.stop()


async def test_no_reconnect_falls_back_and_the_old_profile_still_works(
    rt: Runtime, pki: Pki
) -> None:
    await provision(rt, CHARGER_ID, KEY)
    charger = sim(
        rt,
        ocpp_ca=(pki.server_ca.read_text(),),
        faults=FaultProfile(no_reconnect_after_profile_switch=1),
    )
    charger.start()
    try:
        await until(lambda: charger.accepted)
        answer = await upgrade(rt, 2, deadline_seconds=1)
        assert answer["state"] == "failed" and answer["security_profile"] == 1, answer
        assert charger.offline_forever
        assert await stored_profile(rt) == 1
        ws = await connect(rt, CHARGER_ID, KEY)  # still reachable the old way
        await ws.close()
        async with api_client(rt) as api:
            alerts = (await api.get("/api/v1/alerts")).json()
        assert any(a["rule"] == "security_profile_upgrade_failed" for a in alerts["items"])
        # The CLI: the charger is gone for good now, so one clear line and a non-zero exit.
        r = await invoke(rt, "charger-security", "upgrade", CHARGER_ID, "--profile", "2")
        assert r.exit_code == 1 and "not connected" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    finally:
        await charger.stop()


async def test_a_staged_upgrade_stops_after_the_first_stage_fails(rt: Runtime, pki: Pki) -> None:
    root = pki.server_ca.read_text()
    first, second = "STAGE-CP-1", "STAGE-CP-2"
    for identity in (first, second):
        await provision(rt, identity, KEY)
    dark = sim(rt, first, faults=FaultProfile(no_reconnect_after_profile_switch=1))
    fine = sim(rt, second)
    chargers = [dark, fine]
    for c in chargers:
        c.start()
    try:
        await until(lambda: all(c.accepted for c in chargers))
        async with api_client(rt) as api:
            r = await api.post(
                "/api/v1/security-profile/upgrades",
                json={
                    "profile": 2,
                    "root": root,
                    "deadline_seconds": 1,
                    "target": {"charger_ids": [first, second]},
                    "stages": [1],
                    "reason": "move to TLS",
                },
            )
            assert r.status_code == 201, r.text
            op_id = r.json()["id"]

            async def state() -> str:
                return str((await api.get(f"/api/v1/operations/{op_id}")).json()["state"])

            assert await until(state, lambda s: s != "running", timeout=20) == "stopped"
        assert dark.offline_forever
        # The second stage never ran: the second charger was not even sent the root.
        assert fine.security_profile == 1 and fine.csms_roots() == [] and fine.accepted
        async with rt.engine.connect() as conn:
            rows = await conn.execute(select(Charger.id, Charger.security_profile))
            stored = {r.id: r.security_profile for r in rows}
        assert stored == {first: 1, second: 1}
    finally:
        for c in chargers:
            await c.stop()


# -- OCPP 2.0.1 (A05): SetNetworkProfile into a free slot, NetworkConfigurationPriority with the
# new slot first and the old one behind it, Reset OnIdle, then the same wait as on 1.6.

V201 = "ocpp2.0.1"


async def test_v201_upgrade_1_to_2_sets_a_network_profile_and_then_refuses_plain_ws(
    rt: Runtime, pki: Pki
) -> None:
    await provision(rt, CHARGER_ID, KEY)
    charger = sim(rt, protocol=V201)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        answer = await upgrade(rt, 2, root=pki.server_ca.read_text(), deadline_seconds=20)
        assert answer["state"] == "upgraded", answer
        assert charger.csms_roots() == [pki.server_ca.read_text()]
        assert charger.security_profile == 2 and charger.connect_url.startswith("wss://")
        url = f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp/{CHARGER_ID}"
        assert charger.network_slots[1] == (url, 2)  # slot 0 is the one it came with
        assert network.priority(charger) == [1, 0]
        assert charger.stats.calls_received["Reset"] == 1
        assert await stored_profile(rt) == 2
        await charger.stop()
        assert await status_of(connect(rt, CHARGER_ID, KEY)) in (401, 403)  # ws:// refused
    finally:
        await charger.stop()


async def test_v201_upgrade_2_to_3_after_a_renewal(rt: Runtime, pki: Pki) -> None:
    await provision(rt, CHARGER_ID, KEY, security_profile=2)
    charger = sim(rt, protocol=V201, ocpp_ca=(pki.server_ca.read_text(),), security_profile=2)
    charger.start()
    try:
        await until(lambda: charger.accepted)
        async with api_client(rt) as api:
            r = await api.post(f"/api/v1/chargers/{CHARGER_ID}/certificates/renew", json={})
            assert r.status_code == 200, r.text
        await until(lambda: charger.stats.certificates_installed == 1 and charger.accepted)
        await rt.certificates.settled()
        answer = await upgrade(rt, 3, deadline_seconds=20)
        assert answer["state"] == "upgraded", answer
        assert await stored_profile(rt) == 3 and charger.security_profile == 3
        assert network.priority(charger) == [1, 0]
    finally:
        await charger.stop()


async def test_v201_no_reconnect_falls_back_to_the_old_slot(rt: Runtime, pki: Pki) -> None:
    """The new profile's connection fails: the charger comes back on its old slot (the
    priority list kept it behind the new one) and evota keeps the old profile, alerted."""
    await provision(rt, CHARGER_ID, KEY)
    charger = sim(
        rt,
        protocol=V201,
        ocpp_ca=(pki.server_ca.read_text(),),
        faults=FaultProfile(no_reconnect_after_profile_switch=1),
    )
    charger.start()
    try:
        await until(lambda: charger.accepted)
        answer = await upgrade(rt, 2, deadline_seconds=1)
        assert answer["state"] == "failed" and answer["security_profile"] == 1, answer
        assert await stored_profile(rt) == 1
        # back on profile 1 over ws:// by itself, rebooted once, not locked out
        await until(lambda: charger.accepted and charger.stats.reboots == 1)
        assert charger.security_profile == 1 and charger.connect_url.startswith("ws://")
        assert "no connection on profile 2" in (charger.stats.last_error or "")
        async with api_client(rt) as api:
            alerts = (await api.get("/api/v1/alerts")).json()
        assert any(a["rule"] == "security_profile_upgrade_failed" for a in alerts["items"])
    finally:
        await charger.stop()


async def test_v201_an_unreadable_priority_list_fails_before_anything_is_sent(
    rt: Runtime, pki: Pki
) -> None:
    """The charger controls its GetVariables answer: a NetworkConfigurationPriority that is
    no slot list fails the upgrade cleanly, with no network profile sent and no reset."""
    await provision(rt, CHARGER_ID, KEY)
    charger = sim(rt, protocol=V201, ocpp_ca=(pki.server_ca.read_text(),))
    charger.start()
    try:
        await until(lambda: charger.accepted)
        store = state(charger).configuration
        store[network.PRIORITY_KEY] = replace(store[network.PRIORITY_KEY], value="0,x")
        answer = await upgrade(rt, 2, deadline_seconds=20)
        assert answer["state"] == "failed" and "unreadable" in answer["why"], answer
        assert charger.stats.calls_received["SetNetworkProfile"] == 0
        assert charger.stats.calls_received["Reset"] == 0
        assert await stored_profile(rt) == 1 and charger.accepted
    finally:
        await charger.stop()
