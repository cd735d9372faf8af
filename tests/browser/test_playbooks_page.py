"""The playbooks pages: the list with the kill switch, a new playbook from YAML with the
API's problem shown next to the document (naming the field), enable, dry-run, a stale edit
refused, and the runs with their logs; accessible, no script errors."""

from __future__ import annotations

from datetime import timedelta

from playwright.async_api import expect
from sqlalchemy import insert

from evota.store.models import PlaybookRun

from .conftest import Console, check_a11y, no_errors, shot

DOC = """name: door-lock
description: unlock a stuck connector, then tell people
trigger: {kind: connector_faulted, error_codes: [ConnectorLockFailure], for_minutes: 10}
steps:
  - command: unlock-connector
    params: {connector_id: "{connector}"}
    wait: {until: connector_available, minutes: 5}
  - escalate: {message: still stuck}
"""


async def test_playbooks_pages(console: Console):
    r = await console.api.post("/api/v1/chargers", json={"id": "PB-1", "auth_key": "k" * 16 + "PB"})
    assert r.status_code == 201, r.text
    page = await console.page("otto", ["operator"])
    await page.goto("/console/playbooks")
    await expect(page.get_by_test_id("kill-switch")).to_contain_text("Off")
    await check_a11y(page)

    # A document with a bad parameter: the problem sits next to the document, naming the field.
    document = page.get_by_label("Playbook (YAML or JSON)")
    await document.fill(DOC.replace("minutes: 5", "minutes: -5"))
    await page.get_by_role("button", name="Create").click()
    await expect(page.locator("#new-playbook-form .field-error")).to_contain_text(
        "steps[0].wait.minutes"
    )
    await expect(document).to_have_attribute("aria-invalid", "true")
    await document.fill(DOC)
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url("**/console/playbooks/door-lock")
    await expect(page.get_by_test_id("playbook-version")).to_have_text("1")

    page.on("dialog", lambda d: d.accept())
    await page.get_by_role("button", name="Enable…").click()
    await page.locator("#confirm-ok").click()
    await expect(page.get_by_test_id("playbook-version")).to_have_text("2")
    await expect(page.get_by_role("button", name="Disable…")).to_be_visible()
    await page.get_by_role("button", name="Dry-run: record only").click()
    await expect(page.get_by_test_id("playbook-version")).to_have_text("3")

    # An edit of version 3 after someone else saved version 4 is refused (409), not lost.
    changed = DOC.replace("still stuck", "changed elsewhere")
    r = await console.api.put(
        "/api/v1/playbooks/door-lock", content=changed, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200 and r.json()["version"] == 4, r.text
    edit = page.get_by_label("Playbook (YAML)")
    await edit.fill((await edit.input_value()).replace("for_minutes: 10.0", "for_minutes: 20"))
    await page.get_by_role("button", name="Save as the next version").click()
    await expect(page.locator("#edit-form .field-error")).to_contain_text("version 4")

    # Runs with their logs (the engine writes them; its own tests drive real runs).
    now = console.rt.clock.now()
    async with console.rt.engine.begin() as conn:
        await conn.execute(
            insert(PlaybookRun).values(
                id="run-1", playbook="door-lock", playbook_version=2, charger_id="PB-1",
                connector_id=1, fault_key="1:ConnectorLockFailure", trigger={}, state="resolved",
                step_index=0, outcome="resolved", dry_run=False,
                started_at=now - timedelta(minutes=12), updated_at=now, ended_at=now,
                log=[{"at": now.isoformat(), "event": "sent", "command": "unlock-connector"}],
            )
        )  # fmt: skip
    await page.reload()
    await expect(page.locator('[data-outcome="resolved"]')).to_have_text("1")
    await page.get_by_text("1 entry").click()
    await expect(page.locator("ol.log")).to_contain_text("unlock-connector")
    await check_a11y(page)
    await shot(page, "playbook")

    # The kill switch, from the list.
    await page.goto("/console/playbooks")
    await expect(page.get_by_role("link", name="door-lock")).to_be_visible()
    await page.get_by_role("button", name="Stop all playbooks…").click()
    await page.locator("#confirm-ok").click()
    await expect(page.get_by_test_id("kill-switch")).to_contain_text("ON")
    assert console.rt.playbooks.kill_switch is True
    await shot(page, "playbooks")
    no_errors(page)

    # A viewer reads the definition, without the forms.
    viewer = await console.page("vera", ["viewer"])
    await viewer.goto("/console/playbooks/door-lock")
    await expect(viewer.get_by_test_id("playbook-document")).to_contain_text("door-lock")
    await expect(viewer.get_by_role("button", name="Enable…")).to_have_count(0)
    await check_a11y(viewer)
