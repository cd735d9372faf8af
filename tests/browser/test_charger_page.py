"""Chargers: the filtered list, the live charger page, a remote command behind its
confirmation dialog, a read-only viewer, and unknown ids."""

from __future__ import annotations

from playwright.async_api import expect

from tests.test_campaigns import fleet_spec

from .conftest import Console, check_a11y, no_errors, shot


async def test_filter_open_a_charger_and_reset_it(console: Console):
    fleet = await console.fleet(fleet_spec(6, console.keys, prefix="CHG-"), session_rate=0.0)
    target = sorted(c.identity for c in fleet.chargers)[0]
    page = await console.page("otto", ["operator"])

    await page.goto("/console/chargers")
    rows = page.locator("#live tbody tr")
    await expect(rows).to_have_count(6)
    await page.get_by_label("Site").select_option("site-1")  # filters apply as they change
    await expect(rows.first).to_contain_text("site-1")
    count = await rows.count()
    assert 0 < count < 6
    assert "site-1" in page.url  # the filter is in the address, so it can be shared
    await page.get_by_role("link", name="Clear").click()
    await expect(rows).to_have_count(6)
    await check_a11y(page)
    await shot(page, "chargers")

    await page.get_by_role("link", name=target, exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Charger {target}")
    await expect(page.get_by_test_id("connection")).to_contain_text("Online")
    await expect(
        page.locator("#live").get_by_role("row").filter(has_text="Available")
    ).not_to_have_count(0)

    # The reset form sits behind a dialog that requires a reason (a critical command).
    reset = page.locator("#cmd-reset")
    await reset.get_by_label("Type").select_option("Soft")
    await reset.get_by_role("button", name="Send reset…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text(f"Send reset to {target}?")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(reset.locator(".form-status")).to_have_text("")  # nothing was sent
    await reset.get_by_role("button", name="Send reset…").click()
    await dialog.get_by_label("Reason").fill("stuck session on connector 1")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(reset.locator(".form-status")).to_have_text(f"{target} answered Accepted")

    # A bad parameter comes back from the API as a problem next to the field it names.
    unlock = page.locator("#cmd-unlock-connector")
    await page.locator("summary", has_text="unlock-connector").click()
    await unlock.get_by_role("spinbutton", name="Connector id", exact=True).fill("0")
    await unlock.get_by_role("button", name="Send unlock-connector…").click()
    await dialog.get_by_label("Reason").fill("cable stuck")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(
        unlock.locator(".field:has(#cmd-unlock-connector-connector_id) .field-error")
    ).to_contain_text("greater than or equal to 1")
    await check_a11y(page)
    await shot(page, "charger")
    no_errors(page)

    entries = (
        await console.api.get("/api/v1/audit", params={"charger": target, "action": "command"})
    ).json()["items"]
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("command.reset", "otto", "stuck session on connector 1")
    ]

    # A viewer reads the same page without any command form; unknown ids are a 404 page.
    viewer = await console.page("vera", ["viewer"])
    await viewer.goto(f"/console/chargers/{target}")
    await expect(viewer.get_by_test_id("connection")).to_contain_text("Online")
    await expect(viewer.locator("#cmd-reset")).to_have_count(0)
    response = await viewer.goto("/console/chargers/NO-SUCH-CHARGER")
    assert response is not None and response.status == 404
    await expect(viewer.get_by_role("heading", level=2)).to_contain_text("Unknown charger")
    response = await viewer.goto("/console/users")
    assert response is not None and response.status == 403
    await expect(viewer.get_by_role("heading", level=2)).to_contain_text("Forbidden")
    await check_a11y(viewer)
    no_errors(viewer)
