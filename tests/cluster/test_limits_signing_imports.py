"""Shared limits (evota.cluster.limits), the last two that were per node: the SignCertificate
interval per charger and the firmware imports at once hold for the cluster; a dead node's
import slot lapses with its lease; an unreachable Redis decides signings on the node and
refuses imports with a 503 and Retry-After."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from evota.cluster.limits import SharedImportSlots
from evota.cluster.redis import connect as redis_client
from evota.firmware.importer import FetchError, FetchProblem
from evota.runtime import Runtime
from tests.cluster.harness import cluster_redis, pg_database, start_nodes  # noqa: F401
from tests.conftest import ShiftedClock, api_client, connect, provision
from tests.firmware.conftest import site  # noqa: F401
from tests.firmware.test_import import LOOPBACK, problem, request
from tests.firmware.vendor_site import Site
from tests.pki_fixtures import CPO, make_csr, new_key
from tests.redis_fixtures import RedisServer
from tests.support import until
from tests.test_charger_certificates import KEY, RawCharger, entries

INTERVAL_MINUTES = 10


async def _nodes(
    tmp_path: Path, url: str, redis_url: str, n: int = 2, **overrides: Any
) -> list[Runtime]:
    """``n`` nodes sharing one (movable) clock."""
    return await start_nodes(tmp_path, url, redis_url, n, clock=ShiftedClock(), **overrides)


@pytest.fixture
async def signers(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
) -> AsyncIterator[list[Runtime]]:
    nodes = await _nodes(
        tmp_path, pg_database, redis_url, cpo_name=CPO,
        ca_sign_interval_minutes=INTERVAL_MINUTES, cert_inventory_boot_delay_seconds=3600,
    )  # fmt: skip
    yield nodes
    for node in reversed(nodes):
        await node.stop()


async def _on(node: Runtime, cid: str) -> RawCharger:
    """The charger connected and booted through ``node`` (provisioned on first use, in the
    database every node shares)."""
    async with api_client(node) as api:
        if (await api.get(f"/api/v1/chargers/{cid}")).status_code == 404:
            await provision(node, cid, KEY)
    ch = RawCharger(await connect(node, cid, KEY, ["ocpp2.0.1"]), "ocpp2.0.1")
    await ch.boot()
    return ch


# -- the SignCertificate interval ------------------------------------------------------------


async def test_a_charger_signed_through_one_node_is_refused_through_another(
    signers: list[Runtime],
) -> None:
    a, b = signers
    cid = "CERT-HOP"
    ch = await _on(a, cid)
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
    await until(lambda: ch.received("CertificateSigned"))
    await ch.close()
    ch = await _on(b, cid)  # reconnected through the other node within the interval
    assert await ch.sign(make_csr(new_key(), cid)) == "Rejected"  # as on one node
    await ch.close()
    ch = await _on(a, cid)
    assert await ch.sign(make_csr(new_key(), cid)) == "Rejected"
    (refusal,) = await until(lambda: entries(a, "certificate.sign_refused", cid))
    assert refusal.outcome == "rate_limited"  # the single node's reason, audited once
    await asyncio.gather(a.certificates.settled(), b.certificates.settled())
    assert len(await entries(a, "certificate.sign_refused", cid)) == 1
    (signed,) = await until(lambda: entries(a, "certificate.signed", cid))
    assert signed.outcome == "Accepted"
    await ch.close()

    assert isinstance(a.clock, ShiftedClock) and a.clock is b.clock
    a.clock.advance(minutes=INTERVAL_MINUTES + 1)  # both nodes read the same (moved) clock
    ch = await _on(b, cid)
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
    await ch.close()


async def test_a_renewal_asked_on_any_node_lifts_the_interval_for_the_charger(
    signers: list[Runtime],
) -> None:
    a, b = signers
    cid = "CERT-RENEW"
    ch = await _on(b, cid)
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
    assert await ch.sign(make_csr(new_key(), cid)) == "Rejected"
    await until(lambda: a.node_of(cid) == "node1" and a._ready(cid), timeout=10)
    async with api_client(a) as api:  # asked on node a; the charger is on node b
        r = await api.post(f"/api/v1/chargers/{cid}/certificates/renew", json={"reason": "t"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Accepted"
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"  # the asked-for CSR passes
    await ch.close()


async def test_without_redis_a_signing_is_decided_by_the_nodes_own_memory(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
) -> None:
    (node,) = await _nodes(
        tmp_path, pg_database, cluster_redis.url, n=1, cpo_name=CPO,
        cert_inventory_boot_delay_seconds=3600,
    )  # fmt: skip
    try:
        cid = "CERT-OUTAGE"
        ch = await _on(node, cid)
        cluster_redis.stop()
        assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"  # not refused: not open
        assert await ch.sign(make_csr(new_key(), cid)) == "Rejected"
        (refusal,) = await until(lambda: entries(node, "certificate.sign_refused", cid))
        assert refusal.outcome == "rate_limited"
        await ch.close()
    finally:
        if cluster_redis.process is None:
            cluster_redis.start()
        await node.stop()


# -- firmware imports at once ----------------------------------------------------------------


async def _importers(tmp_path: Path, url: str, redis_url: str, vendor: Site) -> list[Runtime]:
    return await _nodes(
        tmp_path, url, redis_url, firmware_import_ca_file=vendor.ca,
        firmware_import_allow_networks=LOOPBACK, firmware_import_max_concurrent=2,
    )  # fmt: skip


async def test_imports_over_the_cap_across_two_nodes_are_refused(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    redis_url: str,
    site: Site,  # noqa: F811
) -> None:
    site.routes["/stall"] = ("stall", None)
    site.routes["/fw.bin"] = ("file", b"unsigned image")
    a, b = await _importers(tmp_path, pg_database, redis_url, site)
    apis = [api_client(a), api_client(b)]
    path = "/api/v1/firmware/import"
    try:
        stalled = [  # one on each node: the cluster's cap of 2 is full
            asyncio.create_task(api.post(path, json=request(site.url("/stall"), f"9.{i}")))
            for i, api in enumerate(apis)
        ]
        await until(lambda: len(site.seen), lambda n: n == 2)
        for api in apis:  # each node alone runs one import: below its own cap
            r = await api.post(path, json=request(site.url("/fw.bin"), "9.9"))
            assert "in the cluster" in problem(r, 429, "url", "Too many imports")["detail"]
        assert len(site.seen) == 2  # refused before fetching
        site.release.set()
        for task in stalled:
            problem(await task, 422, "url", "Fetch failed")
        r = await apis[1].post(path, json=request(site.url("/fw.bin"), "9.9"))
        assert r.status_code != 429, r.text  # the slots are free again, on every node
        assert len(site.seen) == 3
    finally:
        for api in apis:
            await api.aclose()
        for node in (b, a):
            await node.stop()


async def test_a_running_import_keeps_its_slot_by_renewing_it(redis_url: str) -> None:
    shift = [0.0]
    now = lambda: time.time() + shift[0]  # noqa: E731
    client = redis_client(redis_url)
    a, b = SharedImportSlots(client, now, lease=30), SharedImportSlots(client, now, lease=30)
    try:
        lease = await a.acquire(1)
        shift[0] += 20
        assert await a.renew(lease)
        shift[0] += 20  # 40 s after the slot was taken, 20 s after its renewal
        with pytest.raises(FetchError) as refused:
            await b.acquire(1)
        assert refused.value.problem is FetchProblem.BUSY
        await a.release(lease)
        async with b.hold(1):
            assert len(b.held) == 1
        assert b.held == set() and await client.zcard("evota:imports") == 0
    finally:
        await client.aclose()


HOLDER = """
import asyncio, sys, time
from evota.cluster.limits import SharedImportSlots
from evota.cluster.redis import connect

async def main():
    slots = SharedImportSlots(connect(sys.argv[1]), time.time)
    async with slots.hold(1):
        print("held", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_node_killed_mid_import_frees_its_slot_after_the_lease(redis_url: str) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, redis_url, stdout=subprocess.PIPE
    )
    client = redis_client(redis_url)
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        shift = [0.0]
        other = SharedImportSlots(client, lambda: time.time() + shift[0], lease=30)
        with pytest.raises(FetchError):
            await other.acquire(1)
        holder.send_signal(signal.SIGKILL)  # nobody releases anything
        await asyncio.wait_for(holder.wait(), 10)
        with pytest.raises(FetchError):
            await other.acquire(1)  # the lease still runs
        shift[0] = 31  # one lease later
        lease = await other.acquire(1)
        await other.release(lease)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await client.aclose()


async def test_without_redis_imports_answer_503_with_retry_after(
    tmp_path: Path,
    pg_database: str,  # noqa: F811
    cluster_redis: RedisServer,  # noqa: F811
    site: Site,  # noqa: F811
) -> None:
    site.routes["/fw.bin"] = ("file", b"unsigned image")
    (node,) = await _nodes(
        tmp_path, pg_database, cluster_redis.url, n=1, firmware_import_ca_file=site.ca,
        firmware_import_allow_networks=LOOPBACK,
    )  # fmt: skip
    api = api_client(node)
    path = "/api/v1/firmware/import"
    try:
        assert node.shared_limits is not None
        node.shared_limits.imports._breaker.retry = 0.0  # ask Redis every time
        cluster_redis.stop()
        r = await api.post(path, json=request(site.url("/fw.bin"), "9.9"))
        problem(r, 503, "url", "Imports unavailable")  # fail closed
        assert r.headers["Retry-After"] == "30"
        assert site.seen == []  # nothing fetched
        cluster_redis.start()
        r = await api.post(path, json=request(site.url("/fw.bin"), "9.9"))
        assert r.status_code != 503, r.text
        assert len(site.seen) == 1
    finally:
        await api.aclose()
        if cluster_redis.process is None:
            cluster_redis.start()
        await node.stop()
