"""The audit log page: filters, the verify button on an intact chain and on a tampered one."""

from __future__ import annotations

from playwright.async_api import expect
from sqlalchemy import update

from evota.store.models import AuditEntry

from .conftest import Console, check_a11y, no_errors, shot


async def test_filter_and_verify_the_audit_log(console: Console):
    for i in range(3):
        r = await console.api.post("/api/v1/sites", json={"id": f"s{i}", "name": f"Site {i}"})
        assert r.status_code == 201, r.text
    page = await console.page("audrey", ["auditor"])
    await page.goto("/console/audit")
    rows = page.locator("table.audit tbody tr")
    await expect(rows.first).to_contain_text("api.create_site")
    total = await rows.count()
    assert total >= 4  # three sites and the trusted root

    await page.get_by_label("Action (or prefix)").fill("api.create_site")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(3)
    assert "action=api.create_site" in page.url

    verify = page.get_by_role("button", name="Verify the audit log")
    result = page.locator("#verify-result")
    await verify.click()
    await expect(result).to_have_text(f"Chain intact: all {total} entries verified.")
    await check_a11y(page)
    await shot(page, "audit")

    # Someone edits an entry in the database: verify names it.
    async with console.rt.engine.begin() as conn:
        await conn.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(reason="hidden"))
    await verify.click()
    await expect(result).to_contain_text("Chain broken at entry 2 (edited)")
    await expect(result).to_have_attribute("data-ok", "false")

    # A filter the API refuses is shown as its problem, naming the field.
    response = await page.goto("/console/audit?since=yesterday")
    assert response is not None and response.status == 422
    await expect(page.locator(".problem")).to_contain_text("since")
    no_errors(page)

    # Operators without audit.read do not get the page (nor the link to it).
    operator = await console.page("otto", ["operator"])
    await operator.goto("/console/")
    await expect(operator.get_by_role("link", name="Audit log")).to_have_count(0)
    response = await operator.goto("/console/audit")
    assert response is not None and response.status == 403
