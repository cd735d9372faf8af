"""Every audit entry names its target and what changed (before/after), never a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evota.runtime import Runtime
from tests.conftest import Keys, api_client, start_runtime
from tests.test_firmware_update import trust, upload

KEY = "a-charger-secret-0123456789"


async def _entry(rt: Runtime, action: str) -> dict[str, Any]:
    async with api_client(rt) as api:
        page = (await api.get("/api/v1/audit", params={"action": action, "limit": 1})).json()
    assert page["items"], action
    return dict(page["items"][0])


async def test_entries_name_target_and_changes(
    tmp_path: Path, database_url: str, keys: Keys
) -> None:
    rt = await start_runtime(tmp_path, database_url)
    try:
        async with api_client(rt) as api:
            r = await api.post(
                "/api/v1/sites", json={"id": "paris", "name": "Paris", "region": "FR"}
            )
            assert r.status_code == 201, r.text
            created = await _entry(rt, "api.create_site")
            assert created["target"] == "paris"
            assert created["detail"]["target_type"] == "site"
            assert created["detail"]["changes"]["region"] == {"before": None, "after": "FR"}

            r = await api.patch("/api/v1/sites/paris", json={"region": "DE"})
            assert r.status_code == 200, r.text
            moved = await _entry(rt, "api.update_site")
            assert moved["target"] == "paris" and moved["detail"]["target_type"] == "site"
            assert moved["detail"]["changes"] == {"region": {"before": "FR", "after": "DE"}}

            r = await api.post(
                "/api/v1/chargers", json={"id": "CP-7", "auth_key": KEY, "site_id": "paris"}
            )
            assert r.status_code == 201, r.text
            charger = await _entry(rt, "api.create_charger")
            assert charger["target"] == "CP-7" and charger["chargers"] == ["CP-7"]
            assert charger["detail"]["target_type"] == "charger"
            assert charger["detail"]["changes"]["site_id"]["after"] == "paris"
            assert charger["detail"]["changes"]["auth_key"] == {
                "before": None,
                "after": "[redacted]",
            }
            r = await api.patch(
                "/api/v1/chargers/CP-7", json={"auth_key": KEY[::-1], "tags": ["x"]}
            )
            assert r.status_code == 200, r.text
            rotated = await _entry(rt, "api.update_charger")
            assert rotated["detail"]["changes"] == {
                "auth_key": {"before": "[redacted]", "after": "[redacted]"},
                "tags": {"before": [], "after": ["x"]},
            }

            await trust(api, keys)
            root = await _entry(rt, "api.add_trusted_root")
            assert root["detail"]["target_type"] == "trusted_root" and root["target"]
            assert root["detail"]["changes"]["vendor"]["after"]

            fw = await upload(api, tmp_path, keys, "2.0.0")
            image = await _entry(rt, "api.upload_firmware")
            assert image["target"] == fw["id"] and image["detail"]["target_type"] == "firmware"
            assert image["detail"]["changes"]["version"] == {"before": None, "after": "2.0.0"}

            r = await api.post(
                "/api/v1/users",
                json={"username": "vic", "password": "correct horse battery", "roles": ["viewer"]},
            )
            assert r.status_code == 201, r.text
            user = await _entry(rt, "user.create")
            assert user["target"] == "vic" and user["detail"]["target_type"] == "user"
            assert user["detail"]["changes"]["roles"] == {"before": None, "after": ["viewer"]}

            r = await api.post(
                "/api/v1/config-profiles",
                json={
                    "name": "hb",
                    "target": {"sites": ["paris"]},
                    "settings": {"HeartbeatInterval": "300"},
                },
            )
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            r = await api.patch(
                f"/api/v1/config-profiles/{pid}", json={"settings": {"HeartbeatInterval": "600"}}
            )
            assert r.status_code == 200, r.text
            profile = await _entry(rt, "config_profile.updated")
            assert profile["target"] == pid
            assert profile["detail"]["target_type"] == "config_profile"
            assert profile["detail"]["changes"] == {
                "settings": {
                    "before": {"HeartbeatInterval": "300"},
                    "after": {"HeartbeatInterval": "600"},
                }
            }

            export = (await api.get("/api/v1/audit/export")).text
        for secret in (KEY, KEY[::-1], "correct horse battery"):
            assert secret not in export
    finally:
        await rt.stop()
