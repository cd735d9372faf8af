"""The firmware library: upload a signed image through the page, see the signature check's
result (refused next to the signature field, or verified), and take it through its lifecycle."""

from __future__ import annotations

import re

from playwright.async_api import expect

from evota.firmware import signing
from tests.test_campaigns import fleet_spec
from tests.test_firmware_update import MODEL, VENDOR, image_bytes, upload

from .conftest import Console, check_a11y, no_errors, shot


async def test_upload_a_signed_image_and_release_it(console: Console):
    await upload(console.api, console.tmp_path, console.keys, "1.0.0", size=8 * 1024)
    await console.fleet(fleet_spec(3, console.keys, prefix="FWP-"))
    image = console.tmp_path / "acme-2.0.0.bin"
    image.write_bytes(image_bytes("2.0.0", 64 * 1024))
    other = console.tmp_path / "other.bin"
    other.write_bytes(image_bytes("2.0.0", 1024))
    (console.tmp_path / "good.sig").write_text(signing.sign_file(image, console.keys.key))
    (console.tmp_path / "wrong.sig").write_text(signing.sign_file(other, console.keys.key))
    (console.tmp_path / "signing.pem").write_bytes(console.keys.cert)

    page = await console.page("fiona", ["firmware_manager"])
    await page.goto("/console/firmware")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Firmware library")
    row = page.get_by_role("row").filter(has_text=f"{VENDOR} 1.0.0")
    await expect(row).to_contain_text("3 chargers")  # where each image runs
    await check_a11y(page)

    form = page.locator("#upload-form")
    await form.get_by_label("Firmware file").set_input_files(str(image))
    await form.get_by_label("Vendor").fill(VENDOR)
    await form.get_by_role("textbox", name="Version", exact=True).fill("2.0.0")
    await form.get_by_label("Models").fill(MODEL)
    await form.get_by_label("Signing certificate file (.pem)").set_input_files(
        str(console.tmp_path / "signing.pem")
    )
    await expect(form.get_by_label("Signing certificate (PEM)")).to_have_value(
        re.compile("BEGIN CERTIFICATE")
    )

    # A signature of other bytes: refused, and the problem sits next to the signature field.
    await form.get_by_label("Signature file (.sig, Base64)").set_input_files(
        str(console.tmp_path / "wrong.sig")
    )
    await form.get_by_role("button", name="Upload and check").click()
    error = form.locator(".field:has(#upload-signature) .field-error")
    await expect(error).to_contain_text("Invalid signature")
    await expect(error).to_contain_text("does not match the file")
    await expect(form.get_by_label("Signature (Base64)")).to_have_attribute("aria-invalid", "true")
    await shot(page, "firmware-refused", full=False)

    await form.get_by_label("Signature file (.sig, Base64)").set_input_files(
        str(console.tmp_path / "good.sig")
    )
    await form.get_by_role("button", name="Upload and check").click()
    await page.wait_for_url("**/console/firmware/*?uploaded=1")
    await expect(page.get_by_test_id("signature")).to_contain_text("Signature verified")
    assert "/console/firmware/" in page.url and page.url.endswith("?uploaded=1")
    await expect(page.locator(".notice")).to_contain_text(f"{VENDOR} 2.0.0")
    await check_a11y(page)

    # draft -> pilot -> released, each through the confirmation dialog
    await page.get_by_role("button", name="Move to pilot…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("to pilot?")
    await dialog.get_by_label("Reason").fill("pilot on the lab chargers")
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("heading", level=2).filter(has_text="2.0.0")).to_contain_text(
        "pilot"
    )
    await page.get_by_role("button", name="Release…").click()
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("heading", level=2).filter(has_text="2.0.0")).to_contain_text(
        "released"
    )
    await expect(page.get_by_role("link", name="Start a campaign with this image")).to_be_visible()
    await shot(page, "firmware-image")

    # The library lists both images; the API agrees on the new one's state and signature.
    await page.goto("/console/firmware")
    await expect(page.get_by_role("row").filter(has_text=f"{VENDOR} 2.0.0")).to_contain_text(
        "released"
    )
    await shot(page, "firmware")
    images = (await console.api.get("/api/v1/firmware", params={"version": "2.0.0"})).json()
    assert [(i["state"], i["signed"]) for i in images["items"]] == [("released", True)]
    no_errors(page)
