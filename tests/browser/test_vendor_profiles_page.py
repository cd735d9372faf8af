"""The vendor profiles page: create a profile from the form (the API's problem shown next to
the field), edit it, apply what a real campaign's jobs suggest, and the effective profile on
the charger page; accessible, no script errors."""

from __future__ import annotations

from playwright.async_api import expect

from tests.test_campaigns import POLICY, fleet_spec
from tests.test_firmware_update import MODEL, VENDOR, upload

from .conftest import Console, check_a11y, no_errors, shot


async def test_vendor_profiles_page(console: Console):
    fw = await upload(console.api, console.tmp_path, console.keys, "2.0.0", size=8 * 1024)
    await console.fleet(fleet_spec(3, console.keys, prefix="VP-"), session_rate=0.0)
    c = await console.campaign(fw["id"], waves=[{"percent": 100}], policy=POLICY)
    await console.api.post(f"/api/v1/campaigns/{c['id']}/start", json={})
    await console.until(c["id"], lambda c: c["state"] == "completed", timeout=60)

    page = await console.page("fiona", ["firmware_manager"])
    page.on("dialog", lambda d: d.accept())
    await page.goto("/console/vendor-profiles")
    await expect(page.get_by_test_id("vendor-profiles")).to_contain_text("No vendor profiles")
    await expect(page.get_by_test_id("suggestions")).to_contain_text(f"{VENDOR} {MODEL}")
    await check_a11y(page)

    # An unknown trigger message: the API's problem sits next to the field.
    form = page.locator("#new-profile-form")
    await form.get_by_label("Vendor").fill(VENDOR)
    await form.get_by_label("Signed updates").select_option("false")
    await form.get_by_label("Supported trigger messages").fill("Heartbeat, Reboot")
    await form.get_by_role("button", name="Create").click()
    await expect(form.locator(".field-error")).to_contain_text("Reboot")
    await expect(form.get_by_label("Supported trigger messages")).to_have_attribute(
        "aria-invalid", "true"
    )
    await form.get_by_label("Supported trigger messages").fill("")
    await form.get_by_label("Safe updates per site").fill("2")
    await form.get_by_role("button", name="Create").click()
    await expect(page.get_by_test_id("vendor-profiles")).to_contain_text(f"{VENDOR} (every model)")
    profile = (await console.api.get("/api/v1/vendor-profiles")).json()["items"][0]
    assert (profile["signed_updates"], profile["max_per_site"]) == (False, 2)

    # Apply the suggestion for the model: a vendor+model profile is created with the values.
    await page.get_by_role("button", name=f"Apply to {VENDOR} {MODEL}").click()
    await page.locator("#confirm-ok").click()
    await expect(page.get_by_test_id("vendor-profiles")).to_contain_text(f"{VENDOR} {MODEL}")
    items = (await console.api.get("/api/v1/vendor-profiles")).json()["items"]
    learned = next(p for p in items if p["model"] == MODEL)
    assert learned["install_seconds"] and learned["installed_before_reboot"] is False
    await check_a11y(page)
    no_errors(page)
    await shot(page, "vendor-profiles")

    # The charger page shows the profile that applies to it.
    await page.goto("/console/chargers/VP-0001")
    card = page.get_by_test_id("vendor-profile")
    await expect(card).to_contain_text(f"{VENDOR} {MODEL}")
    await expect(card).to_contain_text("unknown: by the image")  # the model profile says nothing
    await check_a11y(page)
    no_errors(page)
