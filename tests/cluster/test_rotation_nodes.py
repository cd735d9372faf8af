"""The CSMS root rotation's switch on every node (issue 15, evota.cluster.rotation): two
in-process nodes on one PostgreSQL and one Redis, each with its own TLS listener and its own
copy of the server certificate files, a simulated profile-2 charger on each. The switch runs
on the leader; the other node serves the new chain and its charger reconnects, and the
status counts both nodes' chargers."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evota.cluster.rotation import lagging, reconnected
from evota.runtime import Runtime
from evota.sim.charger import SimulatedCharger
from evota.sim.fleet import ChargerSpec
from tests.cluster.harness import cluster_redis, pg_database, start_node  # noqa: F401
from tests.conftest import api_client, provision
from tests.pki_fixtures import CPO, Authority, Credential, Pki
from tests.redis_fixtures import RedisServer
from tests.sim.conftest import fast
from tests.support import until

KEY = "rotation-nodes-key-0123456789"
BASE = "/api/v1/certificates/root-rotation"
FAST = {"call_timeout": 5.0, "cluster_node_ttl_seconds": 1.5, "cluster_heartbeat_seconds": 0.2}


def _pem(authority: Authority) -> str:
    return authority.cert.public_bytes(serialization.Encoding.PEM).decode()


def _own_files(home: Path, pki: Pki) -> tuple[Path, Path]:
    """This node's copy of the server certificate and key (nodes do not share a disk)."""
    home.mkdir(parents=True, exist_ok=True)
    cert, key = home / "server.pem", home / "server.key"
    shutil.copyfile(pki.server.cert_path, cert)
    shutil.copyfile(pki.server.key_path, key)
    return cert, key


def _stage_next(cert: Path, key: Path, server: Credential) -> None:
    """The operator puts the new server certificate next to this node's configured one."""
    Path(f"{cert}.next").write_bytes(server.cert_path.read_bytes())
    Path(f"{key}.next").write_bytes(server.key_path.read_bytes())


async def _served(port: int) -> x509.Certificate:
    """The certificate a TLS handshake with the listener shows now."""
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode())


@pytest.fixture
async def nodes(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
    pki: Pki,
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    runtimes: list[Runtime] = []
    try:
        for name in ("a", "b"):
            cert, key = _own_files(tmp_path / f"tls-{name}", pki)
            runtimes.append(
                await start_node(
                    tmp_path / name,
                    pg_database,
                    f"node-{name}",
                    runtimes[0] if runtimes else None,
                    redis_url=cluster_redis.url,
                    ocpp_tls_port=0,
                    ocpp_tls_cert=cert,
                    ocpp_tls_key=key,
                    cpo_name=CPO,
                    **FAST,
                )
            )
        yield runtimes[0], runtimes[1]
    finally:
        for rt in reversed(runtimes):
            await rt.stop()


def _files(rt: Runtime) -> tuple[Path, Path]:
    cert, key = rt.settings.ocpp_tls_cert, rt.settings.ocpp_tls_key
    assert cert is not None and key is not None
    return cert, key


async def _status(rt: Runtime) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.get(BASE)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_a_switch_on_the_leader_moves_every_nodes_listener_and_chargers(
    nodes: tuple[Runtime, Runtime], pki: Pki
) -> None:
    a, b = nodes
    await until(lambda: a.leadership.is_leader or b.leadership.is_leader, timeout=15)
    new_root, new_server = pki.next_csms_root()
    chargers: dict[str, SimulatedCharger] = {}
    for rt, cid in ((a, "ROT-NA"), (b, "ROT-NB")):
        await provision(a, cid, KEY, security_profile=2)
        spec = ChargerSpec(cid, KEY, protocol="ocpp2.0.1", ocpp_ca=(pki.server_ca.read_text(),))
        chargers[cid] = SimulatedCharger(spec, f"wss://127.0.0.1:{rt.ocpp_tls_port}/ocpp", fast())
        chargers[cid].start()
    try:
        await until(lambda: "ROT-NA" in a.gateway.connections, timeout=15)
        await until(lambda: "ROT-NB" in b.gateway.connections, timeout=15)
        await until(lambda: a.is_connected("ROT-NB") and b.is_connected("ROT-NA"), timeout=15)
        async with api_client(a) as api:
            r = await api.post(
                BASE,
                json={
                    "new_root": _pem(new_root),
                    "old_root": _pem(pki.csms_root),
                    "reason": "yearly root rotation",
                    "stages": [1, 1],
                },
            )
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            # Read on node b: both nodes' chargers count as connected and holding the root.
            view = await until(
                lambda: _status(b), lambda v: v["install_state"] == "completed", timeout=30
            )
            assert (view["connected"], view["holding_new_root"]) == (2, 2), view
            assert view["switch_problem"] is None
            # The operator forgets node b's copy: the leader's node switches, node b (told by
            # the notice) says why it cannot, and the old root must stay.
            leader, other = (a, b) if a.leadership.is_leader else (b, a)
            _stage_next(*_files(leader), new_server)
            connects = {cid: c.stats.connects for cid, c in chargers.items()}
            r = await api.post(f"{BASE}/{rid}/switch")  # any node: it runs on the leader
            assert r.status_code == 200, r.text
            view = await until(
                lambda: _status(a), lambda v: other.node.name in (v["finish_problem"] or "")
            )
            assert "not every node serves the new server certificate" in view["finish_problem"]
            assert (await _served(other.ocpp_tls_port)) == pki.server.cert
            r = await api.post(f"{BASE}/{rid}/finish", json={"reason": "too early"})
            assert r.status_code == 409, r.text
        # Its copy put in place, node b's own check (at start and every 30 s; shortened
        # here) switches it without another notice.
        _stage_next(*_files(other), new_server)
        spread = other.rotation_spread
        assert spread is not None
        await spread.stop()
        spread.recheck = 0.2
        spread.start()
        # Node b serves the new chain too, and its charger reconnected, checking it.
        for rt in (a, b):
            served = await until(
                lambda rt=rt: _served(rt.ocpp_tls_port),
                lambda cert: cert == new_server.cert,
                timeout=15,
            )
            assert served.issuer == new_root.cert.subject
        for cid, c in chargers.items():
            await until(
                lambda c=c, cid=cid: c.stats.connects > connects[cid] and c.accepted, timeout=15
            )
        # The status on either node: every charger closed at the switch is back.
        for rt in (a, b):
            view = await until(
                lambda rt=rt: _status(rt),
                lambda v: v["not_reconnected"] == [] and v["finish_problem"] is None,
                timeout=15,
            )
            assert view["state"] == "switched"
        # The old root's removal, asked and read on the node that does not lead: the
        # leader settles the finished removal (a status write on this node would be refused
        # by the fence: only the leader writes)
        async with api_client(other) as api:
            r = await api.post(f"{BASE}/{rid}/finish", json={"reason": "old root out"})
            assert r.status_code == 200, r.text
        view = await until(lambda: _status(other), lambda v: v["state"] == "finished")
        assert view["remove_state"] == "completed"
    finally:
        for c in chargers.values():
            await c.stop()


def test_who_reconnected_and_which_nodes_lag() -> None:
    epochs = {"A": 10, "B": 30}
    closed = {"A": 20, "B": 20, "C": 20}
    assert reconnected(closed, epochs.get) == {"B"}  # A's claim is the old one, C is away
    nodes = {"n1": {"name": "one", "problem": None}, "n2": {"name": "two", "problem": "no .next"}}
    assert lagging(nodes, ["n1", "n2", "n3"]) == ["two", "n3"]
    assert lagging(nodes, ["n1"]) == []
