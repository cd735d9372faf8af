"""Fleet: many chargers in one loop, waiting helpers, clean stop, REST provisioning."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from evota.sim.fleet import FleetSpec, derive_key, fleet_from_flags, parse_fleet
from evota.sim.runner import Fleet, ProvisionError, wait_until

from .conftest import SEED, FakeCsms, fast


async def test_a_fleet_connects_boots_charges_and_stops_cleanly(csms: FakeCsms) -> None:
    spec = fleet_from_flags(40, prefix="F-", seed=SEED)
    config = fast(session_rate=600.0, session_duration=(60.0, 120.0), meter_interval=30.0)
    fleet = Fleet.from_spec(spec, csms.url, config=config, ramp_up=0.3)
    assert len(fleet) == 40 and fleet["F-0007"].identity == "F-0007"
    await fleet.start()
    try:
        await fleet.wait_for_all(lambda c: c.accepted, 10)
        summary = fleet.summary()
        assert summary.connected == summary.accepted == 40 and summary.pending == 0
        await fleet.wait_until(lambda f: f.summary().sessions_completed >= 40, 10)
    finally:
        await fleet.stop()
    assert all(c._task is None and not c.connected for c in fleet)
    assert fleet.summary().connected == 0 and fleet.summary().energy_kwh > 0
    assert csms.ever_connected == {c.identity for c in fleet}
    assert csms.overlaps == 0 and csms.invalid == []
    await wait_until(lambda: not csms.links, 3)


async def test_connects_are_spread_over_the_ramp_up(csms: FakeCsms) -> None:
    fleet = Fleet.from_spec(fleet_from_flags(20, seed=SEED), csms.url, config=fast(), ramp_up=0.4)
    delays = sorted(c.initial_delay for c in fleet)
    assert delays[0] >= 0 and delays[-1] <= 0.4 and delays[-1] - delays[0] > 0.2
    async with fleet:
        await fleet.wait_for_all(lambda c: c.accepted, 5)
    times = sorted(t for _, _, t in csms.handshakes)
    assert times[-1] - times[0] > 0.15


async def test_wait_helpers_time_out_with_the_state_they_saw(csms: FakeCsms) -> None:
    fleet = Fleet.from_spec(fleet_from_flags(2, seed="wrong"), csms.url, config=fast())
    async with fleet:
        await fleet.wait_until(lambda f: f.summary().http_401 == 2, 3)
        with pytest.raises(TimeoutError, match="0/2 connected"):
            await fleet.wait_until(lambda f: f.summary().accepted == 2, 0.1)
        with pytest.raises(TimeoutError, match=r"2 chargers not there yet.*SIM-0001"):
            await fleet.wait_for_all(lambda c: c.accepted, 0.1)


def test_the_url_must_be_a_websocket_url() -> None:
    with pytest.raises(ValueError, match="ws://"):
        Fleet(fleet_from_flags(1).chargers, "http://127.0.0.1:9000/ocpp")


# -- provisioning ----------------------------------------------------------------------------

FLEET = """
seed: p
sites:
  - {id: s1, name: Site One, timezone: Europe/Berlin, region: DE-BE, tags: [x]}
  - {id: s2, name: Site Two, timezone: UTC}
groups:
  - {prefix: P-, count: 30, sites: [s1, s2], tags: [t]}
chargers:
  - {identity: Q-1}
"""


class Api:
    """A stand-in for the REST API: records requests, answers per a status function."""

    def __init__(self, status: int | None = None, fail: dict[str, list[int]] | None = None):
        self.requests: list[tuple[str, str, dict[str, object]]] = []
        self.status = status
        self.fail = fail or {}  # id -> statuses to answer first
        self.active = self.peak = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request.url.path, request.headers["authorization"], body))
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.001)
        self.active -= 1
        queued = self.fail.get(body["id"])
        if queued:
            return httpx.Response(queued.pop(0), json={"detail": "nope"})
        return httpx.Response(self.status or 201, json=body)


def fleet_for(text: str) -> tuple[FleetSpec, Fleet]:
    spec = parse_fleet(text)
    return spec, Fleet.from_spec(spec, "ws://127.0.0.1:1/ocpp")


async def test_provision_creates_sites_then_chargers_with_their_keys() -> None:
    _spec, fleet = fleet_for(FLEET)
    api = Api(fail={"P-0003": [409], "s2": [409], "P-0004": [503, 502]})
    report = await fleet.provision(
        "http://evota:8000",
        "tok",
        concurrency=4,
        retry_delay=0.001,
        transport=httpx.MockTransport(api.handler),
    )
    assert (report.created, report.existing, report.failed) == (31, 2, [])
    paths = [p for p, _, _ in api.requests]
    assert paths[:2] == ["/api/v1/sites", "/api/v1/sites"]
    assert set(paths[2:]) == {"/api/v1/chargers"} and len(paths) == 2 + 31 + 2  # 2 retries
    assert {a for _, a, _ in api.requests} == {"Bearer tok"}
    assert 1 < api.peak <= 4
    bodies = {b["id"]: b for p, _, b in api.requests if p.endswith("/chargers")}
    assert bodies["P-0002"] == {
        "id": "P-0002",
        "auth_key": derive_key("p", "P-0002"),
        "site_id": "s2",
        "tags": ["t"],
    }
    assert bodies["Q-1"] == {"id": "Q-1", "auth_key": derive_key("p", "Q-1")}
    sites = [b for p, _, b in api.requests if p.endswith("/sites")]
    assert sites[0] == {
        "id": "s1",
        "name": "Site One",
        "timezone": "Europe/Berlin",
        "region": "DE-BE",
        "tags": ["x"],
    }


async def test_provision_accepts_an_api_url_that_already_has_the_prefix() -> None:
    _, fleet = fleet_for("chargers: [{identity: A}]")
    api = Api()
    await fleet.provision(
        "http://evota/api/v1/", "t", retry_delay=0.001, transport=httpx.MockTransport(api.handler)
    )
    assert [p for p, _, _ in api.requests] == ["/api/v1/chargers"]


async def test_a_refused_token_stops_provisioning() -> None:
    _, fleet = fleet_for(FLEET)
    api = Api(status=401)
    with pytest.raises(ProvisionError, match="refused the token"):
        await fleet.provision(
            "http://evota", "bad", retry_delay=0.001, transport=httpx.MockTransport(api.handler)
        )
    assert len(api.requests) <= 16 + 2  # sites only, no charger attempted
    assert not any(p.endswith("/chargers") for p, _, _ in api.requests)


async def test_rejected_records_are_reported_after_the_rest_were_tried() -> None:
    _, fleet = fleet_for(FLEET)
    api = Api(fail={"P-0010": [422], "P-0011": [422]})
    with pytest.raises(ProvisionError, match=r"charger P-0010: HTTP 422.*\(and 1 more\)"):
        await fleet.provision(
            "http://evota", "t", retry_delay=0.001, transport=httpx.MockTransport(api.handler)
        )
    assert len([p for p, _, _ in api.requests if p.endswith("/chargers")]) == 31


async def test_an_unreachable_api_is_a_provision_error() -> None:
    _, fleet = fleet_for("chargers: [{identity: A}]")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(ProvisionError, match="cannot reach the API"):
        await fleet.provision(
            "http://evota", "t", retry_delay=0.001, transport=httpx.MockTransport(refuse)
        )
