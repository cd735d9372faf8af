"""A campaign through the console alone: the wizard's live preview (eligible count, exclusion
reasons, waves, problems next to the field), the draft, start, pause, resume, and live
per-wave progress to completion on a simulated fleet. Then the overview shows the result."""

from __future__ import annotations

import json
import re

from playwright.async_api import expect

from tests.test_campaigns import fleet_spec
from tests.test_firmware_update import MODEL, VENDOR, upload

from .conftest import Console, check_a11y, doc_shot, no_errors, shot

FLEET = 8


async def test_campaign_from_the_wizard_to_completion(console: Console):
    await upload(console.api, console.tmp_path, console.keys, "1.0.0", size=8 * 1024)
    fw = await upload(
        console.api, console.tmp_path, console.keys, "2.0.0", size=32 * 1024, state="released"
    )
    fleet = await console.fleet(fleet_spec(FLEET, console.keys, prefix="CON-"), session_rate=0.0)
    page = await console.page("fiona", ["firmware_manager"])

    await page.goto(f"/console/campaigns/new?firmware={fw['id']}")
    await expect(page.get_by_label("Firmware image")).to_have_value(fw["id"])
    eligible = page.locator("#preview").get_by_test_id("eligible")
    await expect(eligible).to_have_text(str(FLEET))  # the preview runs as soon as it can
    await page.get_by_label("Campaign name").fill("Sim-AC22 to 2.0.0")

    # The preview follows the target: a version filter nobody matches excludes everyone,
    # with the reason.
    await page.get_by_label("Only chargers on versions").fill("0.9")
    await expect(eligible).to_have_text("0")
    await expect(page.locator("#preview")).to_contain_text(f"version not targeted: {FLEET}")
    await page.get_by_label("Only chargers on versions").fill("")
    await page.get_by_label("Models").fill(MODEL)
    await page.get_by_label("Vendors").fill(VENDOR)
    await expect(eligible).to_have_text(str(FLEET))

    # Bad waves: caught in the page, or by the API, and shown next to the waves field.
    waves = page.get_by_role("textbox", name="Waves")
    waves_error = page.locator(".field:has(#c-waves) .field-error")
    await waves.fill("2, lots")
    await expect(waves_error).to_contain_text("neither a count")
    await waves.fill("50%, 20%")
    await expect(waves_error).to_contain_text("cumulative percentages must increase")
    await waves.fill("2, 100%")
    await expect(waves_error).to_have_count(0)
    await expect(page.locator("#preview ol.waves li")).to_have_count(2)
    await expect(page.locator("#preview ol.waves li").first).to_contain_text("2 chargers")
    await expect(page.locator("#preview")).to_contain_text("always open")

    await page.get_by_label("Gate: success threshold (0–1)").fill("0.3")
    await page.get_by_label("Soak after each wave (s)").fill("2")
    await page.get_by_label("Health window (s)").fill("0.5")
    await page.get_by_label("Max share of a site at once (0–1)").fill("0.5")
    await page.get_by_label("More policy (JSON, merged)").fill(
        json.dumps({"retry_backoff_seconds": 0.2, "retries": {"download_failed": 2}})
    )
    await check_a11y(page)
    await shot(page, "campaign-wizard")
    await page.get_by_role("button", name="Create draft").click()

    await page.wait_for_url("**/console/campaigns/*")
    state = page.get_by_test_id("campaign-state")
    await expect(state).to_have_text("draft")
    await expect(page.locator("#live").get_by_test_id("eligible")).to_have_text(str(FLEET))
    await check_a11y(page)

    await page.get_by_role("button", name="Start…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text(f"on {FLEET} chargers")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(state).to_have_text("running")

    await page.get_by_role("button", name="Pause").click()
    await expect(state).to_have_text("paused")
    await expect(page.get_by_role("button", name="Resume")).to_be_focused()
    campaign_id = page.url.rsplit("/", 1)[1]
    summary = (await console.api.get(f"/api/v1/campaigns/{campaign_id}")).json()
    assert summary["state"] == "paused"
    await page.get_by_role("button", name="Resume").click()
    await expect(state).to_have_text("running")
    await expect(page.get_by_role("button", name="Pause")).to_be_focused()

    # Live: the waves fill in and the state reaches completed without a reload.
    await expect(state).to_have_text("completed", timeout=60_000)
    rows = page.locator("#live tr[data-wave]")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("passed")
    await expect(rows.nth(1)).to_contain_text("succeeded 6")
    # The charts: each wave's jobs by state, and each gate's evidence against the threshold,
    # with the numbers as a table behind a disclosure.
    waves_chart = page.get_by_role("img", name="Wave progress")
    await expect(waves_chart).to_be_visible()
    await expect(waves_chart).to_have_accessible_description(
        "Stacked bar chart. Wave 1 (pilot): succeeded 2; Wave 2: succeeded 6"
    )
    await expect(page.get_by_role("img", name="Gate evidence: jobs judged")).to_be_visible()
    rates = page.get_by_role("img", name="Gate evidence: success rate")
    await expect(rates).to_be_visible()
    await expect(rates).to_have_accessible_description(re.compile(r"Gate 1 \(pilot\): 2/2"))
    table = page.locator("#chart-waves-data table")
    await expect(table).to_be_hidden()
    await page.locator("#chart-waves-data summary").click()
    await expect(table.get_by_role("row", name="Wave 2")).to_contain_text("6")
    await check_a11y(page)
    await doc_shot(page.locator("#chart-waves").locator(".."), "campaign-charts")
    await expect(rows.nth(0)).to_contain_text("so far 2/2 healthy")  # the gate's evidence
    assert "Start" not in await page.locator("#actions").inner_text()
    await shot(page, "campaign")
    assert all(ch.firmware_version == "2.0.0" for ch in fleet.chargers)
    history = (await console.api.get(f"/api/v1/campaigns/{campaign_id}")).json()["history"]
    assert [h["event"] for h in reversed(history)][-1] == "completed"

    # The overview shows the model's firmware distribution: all on the latest release.
    await page.goto("/console/")
    await expect(page.locator('[data-stat="total"]')).to_have_text(str(FLEET))
    await expect(page.locator('[data-stat="behind"]')).to_have_text("0")
    chart = page.get_by_role("img", name=f"{VENDOR} {MODEL} chargers per firmware version")
    await expect(chart).to_have_attribute(
        "aria-label", f"{VENDOR} {MODEL} chargers per firmware version: 2.0.0 {FLEET}"
    )
    await check_a11y(page)
    await shot(page, "overview-after-campaign", full=False)
    no_errors(page)
