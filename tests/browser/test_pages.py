"""Every console page on a mixed fleet: accessible (labels, alt text, heading order), no
script errors, a screenshot each; the overview updates live; the users page creates a user
and shows the API's problems next to the field; unknown pages are a 404 page."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace

from playwright.async_api import expect

from evota.control.operation import ACTIVE, OperationState
from tests.test_campaigns import fleet_spec
from tests.test_firmware_update import MODEL, VENDOR, upload

from .conftest import ROOT, Console, check_a11y, doc_shot, no_errors, shot

ALL_ROLES = ["viewer", "operator", "firmware_manager", "security_admin", "auditor"]


async def test_every_page_is_accessible_and_live(console: Console):
    old = await upload(console.api, console.tmp_path, console.keys, "1.0.0", size=4096)
    new = await upload(console.api, console.tmp_path, console.keys, "1.1.0", size=4096)
    for image in (old, new):
        await console.api.post(f"/api/v1/firmware/{image['id']}/state", json={"state": "released"})
    await upload(console.api, console.tmp_path, console.keys, "1.2.0-rc1", size=4096)
    ac = fleet_spec(9, console.keys, prefix="AC-")
    versions = ["1.1.0"] * 5 + ["1.0.0"] * 3 + ["0.9.8"]
    ac = replace(
        ac,
        chargers=tuple(
            replace(c, firmware_version=v) for c, v in zip(ac.chargers, versions, strict=True)
        ),
    )
    dc = fleet_spec(3, console.keys, prefix="DC-")
    dc = replace(dc, chargers=tuple(replace(c, model="Sim-DC50") for c in dc.chargers))
    fleet = await console.fleet(ac, session_rate=0.0)
    await console.fleet(dc, session_rate=0.0)
    draft = await console.campaign(new["id"], name="AC to 1.1.0", target={"models": [MODEL]})
    op = await console.api.post(
        "/api/v1/operations",
        json={
            "command": "trigger-message",
            "params": {"message": "Heartbeat"},
            "target": {"models": ["Sim-DC50"]},
            "reason": "check the DC chargers answer",
        },
    )
    assert op.status_code == 201, op.text
    for _ in range(6):  # enough failed logins for an anomaly alert
        await console.api.post("/api/v1/auth/login", json={"username": "mallory", "password": "x"})

    rollup = await console.api.post("/api/v1/kpis/rollup")  # the overview's day-by-day charts
    assert rollup.status_code == 200, rollup.text
    page = await console.page("root", ALL_ROLES)
    pages = {
        "overview": "/console/",
        "fleet-firmware": "/console/fleet/firmware",
        "chargers": "/console/chargers",
        "charger": "/console/chargers/AC-0001",
        "firmware": "/console/firmware",
        "firmware-detail": f"/console/firmware/{new['id']}",
        "campaigns": "/console/campaigns",
        "campaign-new": "/console/campaigns/new",
        "campaign-draft": f"/console/campaigns/{draft['id']}",
        "operations": "/console/operations",
        "operation-detail": f"/console/operations/{op.json()['id']}",
        "approvals": "/console/approvals",
        "alerts": "/console/alerts",
        "resolution": "/console/resolution",
        "playbooks": "/console/playbooks",
        "vendor-profiles": "/console/vendor-profiles",
        "audit": "/console/audit",
        "users": "/console/users",
        "account": "/console/mfa",
    }
    for name, path in pages.items():
        response = await page.goto(path)
        assert response is not None and response.status == 200, (path, response and response.status)
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        await check_a11y(page)
        await shot(page, f"page-{name}")
    no_errors(page)

    # Operations: the state filter offers the operation state vocabulary; a detail page
    # refreshes itself and offers cancel exactly while the operation is active.
    await page.goto("/console/operations")
    options = await page.locator("#filter-state option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["", *OperationState]
    await page.goto(f"/console/operations/{op.json()['id']}")
    shown = (await page.get_by_test_id("operation-state").text_content() or "").replace(" ", "_")
    active = OperationState(shown) in ACTIVE
    assert (await page.locator("#live[hx-get]").count() == 1) == active
    assert (await page.locator("#cancel-form").count() == 1) == active

    # The overview: counts, the version chart per model, who is behind, open alerts.
    await page.goto("/console/")
    await expect(page.locator('[data-stat="total"]')).to_have_text("12")
    await expect(page.locator('[data-stat="online"]')).to_have_text("12")
    await expect(page.locator('[data-stat="behind"]')).to_have_text("4")  # 3 on 1.0.0, 1 on 0.9.8
    await expect(page.locator('[data-stat="alerts"]')).not_to_have_text("0")
    chart = page.get_by_role("img", name=f"{VENDOR} {MODEL} chargers per firmware version")
    await expect(chart).to_have_attribute(
        "aria-label", f"{VENDOR} {MODEL} chargers per firmware version: 1.1.0 5, 1.0.0 3, 0.9.8 1"
    )
    await expect(page.locator("figure.chart").filter(has_text=MODEL)).to_contain_text("3 versions")
    path = await shot(page, "overview", full=False)
    if os.environ.get("EVOTA_UPDATE_README_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "docs" / "images" / "console.png")

    # Firmware across the fleet: each model by version (shares) and against its release, the
    # numbers in words for a screen reader and as a table that stays open across live updates.
    versions_chart = page.get_by_role("img", name="Firmware versions across the fleet")
    await expect(versions_chart).to_have_accessible_description(
        re.compile(f"{VENDOR} {MODEL}: 1.1.0 5, 1.0.0 3, 0.9.8 1(;|$)")
    )
    standing = page.get_by_role("img", name="Chargers against their model's latest release")
    await expect(standing).to_have_accessible_description(
        re.compile(f"{VENDOR} {MODEL}: on the latest release 5, behind 4(;|$)")
    )
    details = page.locator("#chart-fleet-standing-data")
    await details.locator("summary").click()
    await expect(details.get_by_role("row", name=f"{VENDOR} {MODEL}")).to_contain_text("9")
    for chart in ("#chart-fleet-versions", "#chart-fleet-standing"):  # each links its export
        href = await page.locator(f"{chart} a.evchart-csv").get_attribute("href")
        export = await page.request.get(href or "")
        assert export.ok and export.headers["content-type"].startswith("text/csv"), href
    # The next poll (every 5 s; skipped while the focus is inside the region) swaps #live.
    await page.evaluate("document.activeElement.blur()")
    await page.evaluate("window.__live = document.getElementById('live')")
    await page.wait_for_function("() => document.getElementById('live') !== window.__live")
    await expect(details).to_have_attribute("open", "")
    await doc_shot(
        page.locator("section[aria-labelledby=fleet-firmware-heading]"), "overview-charts"
    )
    # The fleet day by day (today so far, from the rollup); no sessions yet: a gap, not 0 %.
    availability = page.get_by_role("img", name="Availability and session success per day")
    await expect(availability).to_have_accessible_description(
        re.compile(r"available: latest [0-9.]+ %, .*; sessions succeeded: no data$")
    )
    await expect(page.locator("#chart-fleet-incidents-data")).to_contain_text("faults")

    # Live without a reload: a charger goes offline and the count follows.
    await page.evaluate("window.__same_page = true")
    await fleet.chargers[0].stop()
    await expect(page.locator('[data-stat="online"]')).to_have_text("11", timeout=15_000)
    await expect(page.locator('[data-stat="offline"]')).to_have_text("1")
    assert await page.evaluate("window.__same_page === true")

    # Users: the password policy's problem sits next to the password field.
    await page.goto("/console/users")
    form = page.locator("#user-form")
    await form.get_by_role("textbox", name="Username").fill("nina")
    await form.get_by_label("Initial password").fill("short")
    await form.get_by_label("operator", exact=True).check()
    await form.get_by_role("button", name="Create user").click()
    await expect(form.locator(".field:has(#u-password) .field-error")).to_contain_text("12")
    await form.get_by_label("Initial password").fill("a long enough passphrase")
    await form.get_by_role("button", name="Create user").click()
    await expect(page.get_by_role("row", name="nina")).to_contain_text("operator")
    users = (await console.api.get("/api/v1/users/nina")).json()
    assert users["roles"] == ["operator"]

    response = await page.goto("/console/no-such-page")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", level=2)).to_contain_text("Not found")
    no_errors(page)
