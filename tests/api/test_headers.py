"""Security headers on console pages and API responses (evota.api.headers), over real HTTP.

The browser tests (tests/browser) run every console page under this policy and fail on any
violation Chromium reports; here: the headers themselves, and the templates and script kept
free of what a strict policy would block.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from evota.api.headers import CONSOLE_CSP, DATA_CSP, security_headers
from evota.runtime import Runtime
from tests.conftest import TOKEN, api_client, session_for, start_runtime

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "evota" / "console"


@pytest.fixture
async def rt(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(tmp_path, sqlite_url)
    yield runtime
    await runtime.stop()


def _common(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"


async def test_console_pages_get_the_strict_policy(rt: Runtime) -> None:
    token = await session_for(rt, "ops", ["admin"])
    base = f"http://127.0.0.1:{rt.http_port}"
    async with (
        httpx.AsyncClient(base_url=base, cookies={"evota_session": token}) as browser,
        httpx.AsyncClient(base_url=base) as visitor,
    ):
        for client, path in (
            (visitor, "/login"),
            (browser, "/console/"),
            (browser, "/console/chargers"),
            (browser, "/console/firmware"),
        ):
            r = await client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            _common(r)
            csp = r.headers["content-security-policy"]
            assert csp == CONSOLE_CSP
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe" not in csp
        r = await browser.get("/static/console/console.js")
        _common(r)


async def test_api_responses_get_a_data_policy(rt: Runtime) -> None:
    async with api_client(rt) as api:
        ok = await api.get("/api/v1/chargers")
        assert ok.status_code == 200
        _common(ok)
        assert ok.headers["content-security-policy"] == DATA_CSP
    async with api_client(rt, token=None) as anonymous:
        refused = await anonymous.get("/api/v1/chargers")
        assert refused.status_code == 401
        _common(refused)
        assert refused.headers["content-security-policy"] == DATA_CSP
        # refused by the body limits before any route: the headers are there too
        early = await anonymous.post("/api/v1/sites", content=b" " * 100_000)
        assert early.status_code == 401
        _common(early)
        # the generated API docs load Swagger UI from a CDN: no CSP, the rest stays
        docs = await anonymous.get("/api/docs")
        assert docs.status_code == 200 and "content-security-policy" not in docs.headers
        _common(docs)
    assert TOKEN


def test_security_headers_is_pure() -> None:
    html = dict(security_headers("/console/", "text/html; charset=utf-8"))
    assert html[b"content-security-policy"] == CONSOLE_CSP.encode()
    assert (
        dict(security_headers("/api/v1/x", "application/json"))[b"content-security-policy"]
        == DATA_CSP.encode()
    )
    assert b"content-security-policy" not in dict(security_headers("/api/docs", "text/html"))


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
_STYLE_ATTR = re.compile(r"\sstyle\s*=", re.IGNORECASE)


@pytest.mark.parametrize(
    "template", sorted((CONSOLE / "templates").glob("*.html")), ids=lambda p: p.name
)
def test_templates_have_nothing_a_strict_policy_blocks(template: Path) -> None:
    text = template.read_text()
    assert not _INLINE_SCRIPT.search(text), "inline <script>: move it to static/console.js"
    assert "<style" not in text.lower(), "inline <style>: move it to static/console.css"
    assert not _STYLE_ATTR.search(text), "style= attribute: use a class (or SVG attributes)"
    assert not _HANDLER.search(text), "on…= event handler: bind it in static/console.js"
    assert "hx-on" not in text and "javascript:" not in text.lower()
    assert "js:" not in text, "htmx js: values need eval"
    for trigger in re.findall(r'hx-trigger="([^"]*)"', text):
        assert "[" not in trigger, f"hx-trigger filter {trigger!r} needs eval"


def test_htmx_runs_without_eval_and_injected_styles() -> None:
    base = (CONSOLE / "templates" / "base.html").read_text()
    config = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", base)
    assert config is not None
    assert '"allowEval": false' in config[1] and '"includeIndicatorStyles": false' in config[1]
    script = (CONSOLE / "static" / "console.js").read_text()
    assert "eval(" not in script and "new Function" not in script
    assert ".innerHTML" not in script.replace("target.innerHTML = r.data", "")
