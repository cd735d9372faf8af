"""REST API: authentication, problem bodies naming the field, filters and pagination."""

from __future__ import annotations

import pytest

from tests.conftest import api_client, provision


async def test_api_requires_a_valid_bearer_token(evota_sqlite):
    async with api_client(evota_sqlite, token=None) as api:
        r = await api.get("/api/v1/chargers")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
    async with api_client(evota_sqlite, token="nope") as api:
        assert (await api.get("/api/v1/sites")).status_code == 401
    async with api_client(evota_sqlite, token=None) as api:
        assert (await api.get("/healthz")).json()["status"] == "ok"


async def test_metrics_count_messages_errors_and_latency(evota_sqlite):
    import json

    from tests.conftest import connect

    await provision(evota_sqlite, "CP-metrics", "0123456789abcdef")
    ws = await connect(evota_sqlite, "CP-metrics", "0123456789abcdef")
    boot = {"chargePointVendor": "A", "chargePointModel": "B"}
    await ws.send(json.dumps([2, "1", "BootNotification", boot]))
    await ws.recv()
    await ws.send("garbage")
    await ws.recv()
    async with api_client(evota_sqlite) as api:
        r = await api.get("/metrics")
    await ws.close()
    assert r.status_code == 200
    text = r.text
    assert "evota_connected_chargers 1.0" in text
    assert 'evota_ocpp_messages_total{action="BootNotification",direction="in",type="call"}' in text
    assert 'evota_ocpp_callerrors_total{code="FormationViolation",direction="out"}' in text
    assert 'evota_ocpp_handler_seconds_bucket{action="BootNotification",le="+Inf"}' in text
    assert 'evota_ocpp_handshakes_total{status="101"}' in text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "CP 1", "auth_key": "0123456789abcdef"}, "id"),
        ({"id": "CP-1", "auth_key": "short"}, "auth_key"),
        ({"id": "CP-1", "auth_key": "0123456789abcdef", "site_id": "nowhere"}, "site_id"),
        ({"id": "CP-1", "auth_key": "0123456789abcdef", "colour": "red"}, "colour"),
        ({"id": "CP-1", "auth_key": "0123456789abcdef", "registration": "Maybe"}, "registration"),
        ({"auth_key": "0123456789abcdef"}, "id"),
    ],
)
async def test_bad_charger_bodies_name_the_field(evota_sqlite, body, field):
    async with api_client(evota_sqlite) as api:
        r = await api.post("/api/v1/chargers", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field


async def test_malformed_json_is_a_problem(evota_sqlite):
    async with api_client(evota_sqlite) as api:
        r = await api.post(
            "/api/v1/sites", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_duplicates_conflict(evota):
    async with api_client(evota) as api:
        body = {"id": "s1", "name": "One", "timezone": "Europe/Berlin"}
        assert (await api.post("/api/v1/sites", json=body)).status_code == 201
        r = await api.post("/api/v1/sites", json=body)
        assert r.status_code == 409 and r.json()["field"] == "id"
    await provision(evota, "CP-dup", "0123456789abcdef")
    async with api_client(evota) as api:
        r = await api.post(
            "/api/v1/chargers", json={"id": "CP-dup", "auth_key": "0123456789abcdef"}
        )
        assert r.status_code == 409


async def test_list_filters_and_pagination(evota):
    async with api_client(evota) as api:
        await api.post("/api/v1/sites", json={"id": "a", "name": "A", "timezone": "UTC"})
        await api.post("/api/v1/sites", json={"id": "b", "name": "B", "timezone": "Asia/Tokyo"})
    for i in range(7):
        await provision(evota, f"CP-{i}", "0123456789abcdef", site_id="a" if i < 5 else "b")
    async with api_client(evota) as api:
        page = (
            await api.get("/api/v1/chargers", params={"site": "a", "limit": 2, "offset": 2})
        ).json()
        assert page["total"] == 5 and [c["id"] for c in page["items"]] == ["CP-2", "CP-3"]
        page = (await api.get("/api/v1/chargers", params={"connected": "false"})).json()
        assert page["total"] == 7
        page = (await api.get("/api/v1/chargers", params={"connected": "true"})).json()
        assert page["total"] == 0
        r = await api.get("/api/v1/chargers", params={"limit": 0})
        assert r.status_code == 422 and r.json()["field"] == "limit"
        assert (await api.get("/api/v1/sites")).json()["total"] == 2
        r = await api.get("/api/v1/chargers/none-such")
        assert r.status_code == 404


async def test_openapi_is_served(evota_sqlite):
    async with api_client(evota_sqlite, token=None) as api:
        spec = (await api.get("/api/openapi.json")).json()
        assert "/api/v1/chargers/{charger_id}/commands/reset" in spec["paths"]
        assert (await api.get("/api/docs")).status_code == 200
