"""Four eyes in the console: an operator requests a reset of several chargers (a bulk
operation above the approval threshold), cannot approve it themselves, and a second
operator approves it in their own browser; the operation then runs to completion."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.test_campaigns import fleet_spec

from .conftest import Console, check_a11y, no_errors, shot

APPROVALS = {"approval_actions": ["operation.start"], "approval_charger_threshold": 2}


@pytest.mark.parametrize("console", [APPROVALS], indirect=True)
async def test_bulk_reset_waits_for_a_second_operator(console: Console):
    fleet = await console.fleet(fleet_spec(4, console.keys, prefix="APR-"), session_rate=0.0)
    ids = sorted(c.identity for c in fleet.chargers)[:3]
    ann = await console.page("ann", ["operator"])
    bob = await console.page("bob", ["operator"])

    await ann.goto(f"/console/operations?chargers={','.join(ids)}")
    form = ann.locator("#operation-form")
    await expect(form.get_by_label("Command", exact=True)).to_have_value("reset")
    await expect(form.get_by_label("Charger ids")).to_have_value(",".join(ids))
    await form.locator("fieldset[data-for=reset]").get_by_label("Type").select_option("Hard")
    await check_a11y(ann)
    await form.get_by_role("button", name="Start operation…").click()

    # The dialog insists on a reason before anything is sent.
    dialog = ann.get_by_role("dialog")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(dialog.locator("#confirm-error")).to_contain_text("Say why")
    await expect(dialog.get_by_label("Reason")).to_be_focused()
    await dialog.get_by_label("Reason").fill("meters stuck after the storm")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(form.locator(".form-status")).to_contain_text("Waiting for a second operator")
    await form.get_by_role("link", name="Follow the operation").click()
    await expect(ann.get_by_test_id("operation-state")).to_have_text("awaiting approval")

    # The requester sees the request but no way to approve it.
    await ann.goto("/console/approvals")
    request = ann.locator("article.approval")
    await expect(request).to_contain_text("meters stuck after the storm")
    await expect(request).to_contain_text("Your own request")
    await expect(request.get_by_role("button", name="Approve…")).to_have_count(0)

    # The second operator approves it from their inbox, with a note.
    await bob.goto("/console/")
    await expect(bob.get_by_role("link", name="Approvals 1 pending")).to_be_visible()
    await bob.get_by_role("link", name="Approvals 1 pending").click()
    card = bob.locator("article.approval")
    await expect(card).to_contain_text("requested by ann")
    await check_a11y(bob)
    await shot(bob, "approvals")
    await card.get_by_role("button", name="Approve…").click()
    bob_dialog = bob.get_by_role("dialog")
    await bob_dialog.get_by_label("Reason").fill("checked with the site")
    await bob_dialog.get_by_role("button", name="Confirm").click()
    await expect(bob.locator("article.approval")).to_have_count(0)
    await expect(bob.get_by_role("row").filter(has_text="ann")).to_contain_text("bob")

    # Back on the operation page (it follows the operation live): all three reset.
    await ann.goto("/console/operations")
    await ann.get_by_role("row").filter(has_text="reset").get_by_role("link").click()
    await expect(ann.get_by_test_id("operation-state")).to_have_text("completed", timeout=30_000)
    await expect(ann.locator('[data-result="succeeded"]')).to_have_text("3")
    await expect(ann.locator("#live")).to_contain_text("checked with the site")
    await check_a11y(ann)
    await shot(ann, "operation")
    no_errors(ann)
    no_errors(bob)

    entries = (await console.api.get("/api/v1/audit", params={"limit": 1000})).json()["items"]
    decided = [e for e in entries if e["action"].startswith("approval.")]
    assert any(e["actor"] == "bob" for e in decided), [e["action"] for e in entries]
    resets = {c for e in entries if e["action"] == "command.reset" for c in e["chargers"]}
    assert resets == set(ids)
