"""The demo's console path as a newcomer takes it: log in as ``ann`` with the printed password,
create a campaign in the wizard *keeping its defaults* (the server's, at demo speed), start it,
``ben`` approves it in his inbox, and the campaign page reaches ``completed`` live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.demo_process import FAST, FAST_ENV, running_demo

from .conftest import VIEWPORT, no_errors, shot

CHARGERS = 40  # 12 VW-11: waves of 5 and 7, each enough for 0.5 (4/4 healthy: bound 0.51)


async def logged_in(browser: Any, base: str, name: str, password: str) -> Any:
    context = await browser.new_context(viewport=VIEWPORT, base_url=base)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.set_default_timeout(15_000)
    await page.goto("/console/")
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{base}/console/")
    return page


@pytest.mark.slow
async def test_the_wizard_with_the_demos_defaults_reaches_completed(tmp_path: Path, browser: Any):
    async with running_demo(tmp_path / "demo", CHARGERS, FAST_ENV) as demo:
        ann = await logged_in(browser, demo.url, "ann", demo.logins["ann"])
        ben = await logged_in(browser, demo.url, "ben", demo.logins["ben"])
        try:
            await ann.goto("/console/campaigns/new")
            # the wizard starts from the server's defaults, not the product's hour-long ones
            await expect(ann.get_by_label("Soak after each wave (s)")).to_have_value(
                str(FAST["soak_seconds"])
            )
            await expect(ann.get_by_label("Gate: success threshold (0–1)")).to_have_value("0.5")
            await ann.get_by_label("Firmware image").select_option(
                label="VoltWorks 1.9.0 · VW-11 (released)"
            )
            await ann.get_by_label("Campaign name").fill("VW-11 1.9.0")
            await ann.get_by_label("Vendors").fill("VoltWorks")
            await ann.get_by_label("Models").fill("VW-11")
            eligible = ann.locator("#preview").get_by_test_id("eligible")
            await expect(eligible).to_have_text("12")
            await ann.get_by_role("button", name="Create draft").click()

            await ann.wait_for_url("**/console/campaigns/*")
            state = ann.get_by_test_id("campaign-state")
            await expect(state).to_have_text("draft")
            await ann.get_by_role("button", name="Start…").click()
            dialog = ann.get_by_role("dialog")
            await dialog.get_by_label("Reason").fill("demo")
            await dialog.get_by_role("button", name="Confirm").click()
            await expect(ann.locator("#start-form .form-status")).to_contain_text("second operator")

            await ben.goto("/console/approvals")
            card = ben.locator("article.approval")
            await expect(card).to_contain_text("requested by ann")
            await card.get_by_role("button", name="Approve…").click()
            await ben.get_by_role("dialog").get_by_role("button", name="Confirm").click()
            await expect(ben.locator("article.approval")).to_have_count(0)

            await ann.reload()
            await expect(state).to_have_text("completed", timeout=90_000)
            await expect(ann.locator("#live tr[data-wave]").first).to_contain_text("passed")
            await shot(ann, "demo-campaign")
            no_errors(ann)
            no_errors(ben)
        finally:
            await ann.context.close()
            await ben.context.close()
