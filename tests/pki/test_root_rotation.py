"""CSMS root rotation end to end (issue 16 §7): a fleet of simulators (1.6 and 2.0.1, profile
2 over wss://, each checking evota against the CSMS roots it holds) gets the new root in a
staged operation, evota switches its server certificate (the chargers reconnect and check
the new chain), and the old root is removed; a charger that refuses the install stops the
stage and the switch is refused; the old root cannot be removed early. Plus the pure rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from evota.audit.log import Actor
from evota.cli import app as cli_app
from evota.operators.approvals import ApprovalError
from evota.pki import rotation as rules
from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec
from tests.conftest import TOKEN, api_client, provision, session_for, start_runtime
from tests.pki_fixtures import CPO, Authority, Credential, Pki
from tests.sim.conftest import fast
from tests.support import until

KEY = "root-rotation-key-0123456789"
BASE = "/api/v1/certificates/root-rotation"


def pem_of(authority: Authority) -> str:
    return authority.cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str, pki: Pki) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_tls_port=0,
        ocpp_tls_cert=pki.server.cert_path,
        ocpp_tls_key=pki.server.key_path,
        cpo_name=CPO,
    )
    yield runtime
    await runtime.stop()


async def fleet(rt: Runtime, pki: Pki, specs: dict[str, dict[str, Any]]) -> list[SimulatedCharger]:
    out = []
    for cid, kw in specs.items():
        await provision(rt, cid, KEY, security_profile=2)
        spec = ChargerSpec(cid, KEY, ocpp_ca=(pki.server_ca.read_text(),), **kw)
        charger = SimulatedCharger(spec, f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp", fast())
        charger.start()
        out.append(charger)
    for charger in out:
        await until(lambda c=charger: c.accepted)  # type: ignore[misc]
    return out


async def status(rt: Runtime) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.get(BASE)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def start(rt: Runtime, pki: Pki, new: Authority, **extra: Any) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.post(
            BASE,
            json={
                "new_root": pem_of(new),
                "old_root": pem_of(pki.csms_root),
                "reason": "yearly root rotation",
                **extra,
            },
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


async def cli(rt: Runtime, *args: str) -> Any:
    env = {"EVOTA_URL": f"http://127.0.0.1:{rt.http_port}", "EVOTA_TOKEN": TOKEN}
    argv = ["certificate", "rotate-root", *args]
    return await asyncio.to_thread(CliRunner().invoke, cli_app, argv, env=env)


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def stage_next(pki: Pki, server: Credential) -> None:
    """The operator puts the new server certificate next to the configured one."""
    Path(f"{pki.server.cert_path}.next").write_bytes(server.cert_path.read_bytes())
    Path(f"{pki.server.key_path}.next").write_bytes(server.key_path.read_bytes())


async def test_a_fleet_moves_to_the_new_root_without_a_lock_out(rt: Runtime, pki: Pki) -> None:
    new_root, new_server = pki.next_csms_root()
    chargers = await fleet(
        rt, pki, {"ROT-16": {"protocol": "ocpp1.6"}, "ROT-201": {"protocol": "ocpp2.0.1"}}
    )
    try:
        rotation = await start(rt, pki, new_root, stages=[1, 1])
        rid = rotation["id"]
        async with api_client(rt) as api:
            # The old root cannot go before the switch.
            r = await api.post(f"{BASE}/{rid}/finish", json={"reason": "too early"})
            assert r.status_code == 409 and "not been switched" in r.json()["detail"], r.text
            view = await until(lambda: status(rt), lambda v: v["install_state"] == "completed")
            assert view["holding_new_root"] == 2 and view["lacking_new_root"] == []
            assert view["switch_problem"] is None
            assert all(len(c.csms_roots()) == 2 for c in chargers)
            # The switch needs the new certificate in place first.
            r = await api.post(f"{BASE}/{rid}/switch")
            assert r.status_code == 409 and ".next" in r.json()["detail"], r.text
            stage_next(pki, new_server)
            connects = {c.identity: c.stats.connects for c in chargers}
            r = await api.post(f"{BASE}/{rid}/switch")
            assert r.status_code == 200 and r.json()["detail"]["reconnecting"] == 2, r.text
            # Every charger reconnects, checking the new chain against the roots it holds.
            for c in chargers:
                await until(lambda c=c: c.stats.connects > connects[c.identity] and c.accepted)
            assert rt.gateway.tls is not None
            assert rt.gateway.tls.server_not_after == new_server.not_after.replace(microsecond=0)
            view = await status(rt)
            assert view["state"] == "switched" and view["not_reconnected"] == []
            r = await api.post(f"{BASE}/{rid}/finish", json={"reason": "old root out"})
            assert r.status_code == 200, r.text
        view = await until(lambda: status(rt), lambda v: v["state"] == "finished")
        assert view["remove_state"] == "completed"
        new_pem = pem_of(new_root)
        for c in chargers:  # only the new root is left, and the charger still gets in with it
            assert [p.strip() for p in c.csms_roots()] == [new_pem.strip()]
            before = c.stats.connects
            c.reconnect()
            await until(lambda c=c, n=before: c.stats.connects > n and c.accepted)
        assert read(f"{pki.server.cert_path}.previous") == (
            pki.server.cert.public_bytes(serialization.Encoding.PEM)
        )
    finally:
        for c in chargers:
            await c.stop()


async def test_a_charger_refusing_the_install_stops_the_stage_and_the_switch(
    rt: Runtime, pki: Pki
) -> None:
    new_root, new_server = pki.next_csms_root()
    # A 1.6 charger without the security extension answers InstallCertificate NotImplemented.
    chargers = await fleet(
        rt,
        pki,
        {
            "ROT-A-REFUSES": {"protocol": "ocpp1.6", "firmware_update": "plain"},
            "ROT-B-OK": {"protocol": "ocpp2.0.1"},
        },
    )
    try:
        rid = (await start(rt, pki, new_root, stages=[1, 1]))["id"]
        view = await until(lambda: status(rt), lambda v: v["install_state"] == "stopped")
        assert view["lacking_new_root"] == ["ROT-A-REFUSES", "ROT-B-OK"]  # stage 2 never ran
        assert all(len(c.csms_roots()) == 1 for c in chargers)
        stage_next(pki, new_server)
        async with api_client(rt) as api:
            r = await api.post(f"{BASE}/{rid}/switch")
            assert r.status_code == 409, r.text
            body = r.json()
            assert "installation is stopped" in body["detail"]
            assert body["lacking_new_root"] == ["ROT-A-REFUSES", "ROT-B-OK"]
            r = await api.post(f"{BASE}/{rid}/finish", json={"reason": "no"})
            assert r.status_code == 409, r.text
            # The listener still serves the old certificate; nothing was replaced.
            assert read(f"{pki.server.cert_path}.next")
            assert read(pki.server.cert_path) == pki.server.cert.public_bytes(
                serialization.Encoding.PEM
            )
            # A second rotation waits until this one is stopped.
            r = await api.post(
                BASE,
                json={
                    "new_root": pem_of(new_root),
                    "old_root": pem_of(pki.csms_root),
                    "reason": "again",
                },
            )
            assert r.status_code == 409, r.text
        # The console's overview shows it to a security admin, not to a viewer.
        for role, shown in (("security_admin", True), ("viewer", False)):
            token = await session_for(rt, f"rot-{role}", [role])
            async with api_client(rt, None) as web:
                web.cookies.set("evota_session", token)
                page = await web.get("/console/")
            assert page.status_code == 200, page.text
            assert ('id="root-rotation"' in page.text) is shown
            assert ("Lacking the new root: ROT-A-REFUSES, ROT-B-OK" in page.text) is shown
        # The CLI says the same: status, a refused switch in one line, then stop.
        r = await cli(rt, "status")
        assert r.exit_code == 0 and "installing" in r.stdout, r.output
        assert "lacking: ROT-A-REFUSES, ROT-B-OK" in r.stdout, r.output
        r = await cli(rt, "switch", rid)
        assert r.exit_code != 0 and "installation is stopped" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        r = await cli(rt, "stop", rid)
        assert r.exit_code == 0 and "stopped" in r.stdout, r.output
        assert (await status(rt))["state"] == "stopped"
    finally:
        for c in chargers:
            await c.stop()


async def test_bad_requests_are_problems_naming_the_field(rt: Runtime, pki: Pki) -> None:
    new_root, _ = pki.next_csms_root()
    async with api_client(rt) as api:
        cases = [
            ({"new_root": "junk", "old_root": pem_of(pki.csms_root)}, "new_root"),
            (  # a leaf, not a root
                {"new_root": pki.good.cert_path.read_text(), "old_root": pem_of(pki.csms_root)},
                "new_root",
            ),
            ({"new_root": pem_of(pki.csms_root), "old_root": pem_of(pki.csms_root)}, "new_root"),
            ({"new_root": pem_of(new_root), "old_root": pem_of(new_root)}, "new_root"),
            (  # the server in use does not chain to this "old" root
                {"new_root": pem_of(new_root), "old_root": pem_of(pki.charger_root)},
                "old_root",
            ),
        ]
        for body, field in cases:
            r = await api.post(BASE, json={**body, "reason": "test"})
            assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
        r = await api.post(f"{BASE}/nope/switch")
        assert r.status_code == 404, r.text


# -- the pure rules ------------------------------------------------------------------------------


def test_switch_rules() -> None:
    targets = ["A", "B", "C"]
    ready = rules.switch_readiness("installing", "completed", targets, {"A", "B"}, {"A", "B"}, 1)
    assert ready.problem is None and ready.lacking == ()
    ready = rules.switch_readiness("installing", "completed", targets, {"A", "B"}, {"A"}, 1)
    assert ready.problem is not None and ready.lacking == ("B",)
    assert (
        rules.switch_readiness("installing", "completed", targets, {"A", "B"}, {"A"}, 0.5).problem
        is None
    )
    assert rules.switch_readiness("installing", "running", targets, {"A"}, {"A"}, 1).problem
    assert rules.switch_readiness("installing", "completed", targets, set(), set(), 1).problem
    assert rules.switch_readiness("switched", "completed", targets, {"A"}, {"A"}, 1).problem


def test_removal_rules() -> None:
    now = datetime.now(UTC)
    assert rules.removal_readiness("installing", None, set(), set()).problem
    waiting = rules.removal_readiness("switched", now, {"A", "B"}, {"A"})
    assert waiting.problem and waiting.waiting == ("B",)
    assert rules.removal_readiness("switched", now, {"A", "B"}, {"A", "B"}).problem is None
    # A cluster node still serving the old chain holds the removal back (evota.cluster.rotation).
    lagging = rules.removal_readiness("switched", now, {"A"}, {"A"}, ["node-b"])
    assert lagging.problem is not None and "node-b" in lagging.problem
    assert rules.removal_readiness("removing", now, set(), set()).problem
    assert rules.end_state("removing", "completed") == "finished"
    assert rules.end_state("removing", "stopped") == "switched"
    assert rules.end_state("removing", "running") is None


async def test_a_restarted_evota_resumes_the_rotation(
    tmp_path: Path, sqlite_url: str, pki: Pki
) -> None:
    """The rotation is stored: after a restart between install and switch the status is
    read back, and the switch and the removal go on (every connection after the restart was
    made under the then-configured certificate)."""
    new_root, new_server = pki.next_csms_root()
    settings = {
        "ocpp_tls_cert": pki.server.cert_path,
        "ocpp_tls_key": pki.server.key_path,
        "cpo_name": CPO,
    }
    first = await start_runtime(tmp_path, sqlite_url, ocpp_tls_port=0, **settings)
    port = first.ocpp_tls_port
    (charger,) = await fleet(first, pki, {"ROT-RESUME": {"protocol": "ocpp2.0.1"}})
    try:
        rid = (await start(first, pki, new_root))["id"]
        await until(lambda: status(first), lambda v: v["install_state"] == "completed")
        await first.stop()
        rt = await start_runtime(tmp_path, sqlite_url, ocpp_tls_port=port, **settings)
        try:
            await until(lambda: rt.gateway.is_connected("ROT-RESUME") and charger.accepted)
            view = await status(rt)
            assert view["id"] == rid and view["state"] == "installing"
            assert view["switch_problem"] is None and view["holding_new_root"] == 1
            stage_next(pki, new_server)
            async with api_client(rt) as api:
                r = await api.post(f"{BASE}/{rid}/switch")
                assert r.status_code == 200, r.text
                await until(lambda: charger.accepted and charger.stats.connects >= 3)
                r = await api.post(f"{BASE}/{rid}/finish", json={"reason": "resumed"})
                assert r.status_code == 200, r.text
            await until(lambda: status(rt), lambda v: v["state"] == "finished")
            assert len(charger.csms_roots()) == 1
        finally:
            await rt.stop()
    finally:
        await charger.stop()


async def test_the_start_waits_for_a_second_operator(
    tmp_path: Path, sqlite_url: str, pki: Pki
) -> None:
    """Four eyes on the start (certificate.rotate-root): nothing is sent until another
    operator approves; the requester cannot approve; once approved the install operation runs
    without a second approval; a rejected start ends the rotation."""
    new_root, _ = pki.next_csms_root()
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        ocpp_tls_port=0,
        ocpp_tls_cert=pki.server.cert_path,
        ocpp_tls_key=pki.server.key_path,
        cpo_name=CPO,
        approval_actions=["certificate.rotate-root", "operation.start"],
        approval_charger_threshold=1,  # the install operation alone would need approval too
    )
    chargers = await fleet(
        rt, pki, {"ROT-4E-1": {"protocol": "ocpp1.6"}, "ROT-4E-2": {"protocol": "ocpp2.0.1"}}
    )
    try:
        async with api_client(rt) as api:
            r = await api.post(
                BASE,
                json={
                    "new_root": pem_of(new_root),
                    "old_root": pem_of(pki.csms_root),
                    "reason": "four eyes",
                },
            )
            assert r.status_code == 202, r.text
            rid, approval_id = r.json()["id"], r.json()["detail"]["approval_id"]
        view = await status(rt)
        assert view["state"] == "awaiting_approval" and view["install_operation_id"] is None
        assert all(len(c.csms_roots()) == 1 for c in chargers)
        asked = await rt.approvals.get(approval_id)
        assert asked is not None and asked.action == "certificate.rotate-root"
        with pytest.raises(ApprovalError):  # who asked cannot approve
            await rt.approvals.decide(approval_id, Actor(asked.requested_by), True)
        await rt.approvals.decide(approval_id, Actor("second-operator"), True)
        view = await until(lambda: status(rt), lambda v: v["install_state"] == "completed")
        assert view["state"] == "installing" and view["holding_new_root"] == 2
        async with api_client(rt) as api:  # another start: rejected, the rotation is stopped
            assert (await api.post(f"{BASE}/{rid}/stop")).status_code == 200
            r = await api.post(
                BASE,
                json={
                    "new_root": pem_of(new_root),
                    "old_root": pem_of(pki.csms_root),
                    "reason": "again",
                },
            )
            assert r.status_code == 202, r.text
            await rt.approvals.decide(r.json()["detail"]["approval_id"], Actor("second"), False)
        assert (await status(rt))["state"] == "stopped"
    finally:
        for c in chargers:
            await c.stop()
        await rt.stop()
