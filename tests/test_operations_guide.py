"""The operations guide says what the code does: every setting in its table, current, and
the client address taken from X-Forwarded-For only when a trusted proxy sends it."""

from __future__ import annotations

from pathlib import Path

import httpx

from evota import config_doc
from evota.config import Settings

from .conftest import api_client

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "operations-guide.md"


def test_the_settings_table_lists_every_setting_and_is_current():
    text = GUIDE.read_text()
    table = config_doc.embedded(text)
    assert table == config_doc.markdown(), "regenerate: uv run python -m evota.config_doc"
    for name, field in Settings.model_fields.items():
        assert f"| `EVOTA_{name.upper()}` |" in table, name
        assert config_doc.describe(name, field), f"EVOTA_{name.upper()} has no description"


async def test_login_throttling_sees_the_address_a_trusted_proxy_forwards(evota_sqlite):
    """As documented: from loopback (the default trusted proxy) X-Forwarded-For names the
    client, right-most address first, so a client's own header cannot spoof it."""
    async with api_client(evota_sqlite, token=None) as anon:
        r = await anon.post(
            "/api/v1/auth/login",
            json={"username": "nobody", "password": "x"},
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
        )
        assert r.status_code == 401
    async with api_client(evota_sqlite) as admin:
        entry = (await admin.get("/api/v1/audit", params={"action": "auth.login"})).json()
    assert entry["items"][0]["detail"]["client"] == "203.0.113.7"


async def test_without_a_proxy_header_the_peer_address_counts(evota_sqlite):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{evota_sqlite.http_port}") as anon:
        await anon.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    async with api_client(evota_sqlite) as admin:
        entry = (await admin.get("/api/v1/audit", params={"action": "auth.login"})).json()
    assert entry["items"][0]["detail"]["client"] == "127.0.0.1"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    import re

    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_links_in_the_readme_and_the_guides_resolve():
    import re

    root = GUIDE.parents[1]
    pages = [root / "README.md", GUIDE, *sorted((root / "docs" / "guide").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if file.is_dir() and not anchor:
                continue  # a folder: GitHub lists it
            if not file.is_file():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in _anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
