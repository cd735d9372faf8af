"""Browser tests of the console: the real runtime and simulated fleet on loopback, Debian's
chromium driven by Playwright (never a downloaded browser).

Without chromium (or the playwright package) the browser tests skip with the reason, unless
``EVOTA_REQUIRE_BROWSER=1`` (CI sets it), where a missing browser fails them instead.
Screenshots of the pages go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.conftest import TOKEN, Keys, session_for
from tests.test_campaigns import World
from tests.test_firmware_update import running

CHROMIUM = os.environ.get("EVOTA_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("EVOTA_REQUIRE_BROWSER") == "1"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}
PASSWORD = "correct horse battery staple"


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (uv sync --frozen)"
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set EVOTA_CHROMIUM)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    missing = _missing()
    if missing:
        if REQUIRE:
            pytest.fail(f"EVOTA_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


class Console(World):
    """A runtime, a fleet on demand, and browser contexts logged in as operators."""

    browser: Any = None
    contexts: list[Any]
    csp_violations: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.rt.http_port}"

    async def user(self, name: str, roles: list[str]) -> None:
        r = await self.api.post(
            "/api/v1/users", json={"username": name, "password": PASSWORD, "roles": roles}
        )
        assert r.status_code == 201, r.text

    async def page(self, who: str | None = None, roles: list[str] | None = None) -> Any:
        """A new browser context (its own cookies); logged in as ``who`` with ``roles``
        (a seeded session with MFA given: the login flow has its own test)."""
        context = await self.browser.new_context(viewport=VIEWPORT, base_url=self.base)
        self.contexts.append(context)
        if who is not None:
            token = await session_for(self.rt, who, roles or [])
            await context.add_cookies([{"name": "evota_session", "value": token, "url": self.base}])
        page = await context.new_page()
        page.errors = []  # JS errors and failed console calls: a test fails on any
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: _console_error(page, msg))
        page.on("console", lambda msg: _csp_violation(self, page, msg))
        page.set_default_timeout(15_000)
        return page


def _csp_violation(console: Console, page: Any, msg: Any) -> None:
    """Chromium reports what the Content-Security-Policy blocked as a console message."""
    if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
        console.csp_violations.append(f"{page.url}: {msg.text}")


def _console_error(page: Any, msg: Any) -> None:
    # A 4xx answer the page shows as a problem is expected; the browser logs it anyway.
    if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
        page.errors.append(msg.text)


@pytest.fixture
async def console(
    tmp_path: Path, sqlite_url: str, keys: Keys, browser: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Console]:
    overrides = getattr(request, "param", {})
    async with running(
        Console, tmp_path, sqlite_url, keys, campaign_tick_seconds=0.2, **overrides
    ) as c:
        c.browser = browser
        c.contexts = []
        c.csp_violations = []
        try:
            yield c
        finally:
            # Pages first: an open event stream would hold the server's shutdown forever.
            for context in c.contexts:
                await context.close()
        # Every page runs under the console's strict policy: anything it blocked is a bug
        # (an inline script, style or handler, or htmx evaluating code).
        assert c.csp_violations == [], c.csp_violations


def totp(secret: str, step_offset: int = 0) -> str:
    """The code for the current 30-second step (or one before/after it)."""
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * step_offset))


async def shot(page: Any, name: str, *, full: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full)
    return path


async def doc_shot(target: Any, name: str) -> Path:
    """A screenshot of a page or of one element (a locator), like :func:`shot`; with
    ``EVOTA_UPDATE_DOC_SCREENSHOTS=1`` also written to ``docs/images/`` (docs/console.md
    shows the charts from there)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    await target.screenshot(path=str(path))
    if os.environ.get("EVOTA_UPDATE_DOC_SCREENSHOTS") == "1":
        shutil.copyfile(path, ROOT / "docs" / "images" / f"{name}.png")
    return path


_A11Y = """() => {
  const problems = [];
  const visible = (el) => !el.closest('[hidden], dialog:not([open])');
  const name = (el) => (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
      || el.getAttribute('title') || '').trim();
  if (!document.documentElement.lang) problems.push('html has no lang');
  if (!document.title.trim()) problems.push('no title');
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (['hidden', 'submit', 'button'].includes(el.type)) continue;
    if (!(el.labels && el.labels.length) && !name(el)) {
      problems.push('unlabelled ' + el.tagName.toLowerCase() + ' ' + (el.name || el.id));
    }
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('img without alt: ' + img.src.slice(0, 60));
  }
  for (const svg of document.querySelectorAll('svg')) {
    if (svg.getAttribute('aria-hidden') === 'true') continue;
    if (svg.getAttribute('role') !== 'img' || !name(svg)) {
      problems.push('svg without role=img and a label');
    }
  }
  for (const b of document.querySelectorAll('button, a[href]')) {
    if (!visible(b)) continue;
    if (!(b.textContent.trim() || name(b))) problems.push('nameless ' + b.outerHTML.slice(0, 80));
  }
  const levels = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]
    .filter(visible).map((h) => Number(h.tagName[1]));
  if (levels.filter((l) => l === 1).length !== 1) problems.push('not exactly one h1: ' + levels);
  if (levels[0] !== 1) problems.push('the first heading is not h1: ' + levels);
  for (let i = 1; i < levels.length; i++) {
    if (levels[i] > levels[i - 1] + 1) problems.push('heading skips a level: ' + levels);
  }
  const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dupes.length) problems.push('duplicate ids: ' + [...new Set(dupes)].join(', '));
  if (!document.querySelector('main')) problems.push('no main landmark');
  return problems;
}"""


async def check_a11y(page: Any) -> None:
    """Labelled fields, images with alt text, headings in order, unique ids, a main."""
    problems = await page.evaluate(_A11Y)
    assert problems == [], f"{page.url}: {problems}"


def no_errors(page: Any) -> None:
    assert page.errors == [], f"{page.url}: {page.errors}"


__all__ = [
    "PASSWORD",
    "TOKEN",
    "Console",
    "check_a11y",
    "doc_shot",
    "no_errors",
    "shot",
    "totp",
]
