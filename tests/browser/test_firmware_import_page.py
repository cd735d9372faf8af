"""The firmware library's import form: a refused address is shown next to the URL field, and
an image fetched from the vendor's (loopback HTTPS) site shows where it came from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from evota.firmware import signing
from tests.conftest import Keys
from tests.firmware.vendor_site import Site
from tests.test_firmware_update import MODEL, VENDOR, image_bytes, running

from .conftest import Console, check_a11y, no_errors, shot


async def test_import_an_image_from_a_vendor_url(
    tmp_path: Path, sqlite_url: str, keys: Keys, browser: Any
) -> None:
    site = Site(tmp_path / "site")
    data = image_bytes("2.2.0", 16 * 1024)
    site.routes["/releases/acme-2.2.0.bin"] = ("file", data)
    image = tmp_path / "acme-2.2.0.bin"
    image.write_bytes(data)
    newer = image_bytes("2.3.0", 16 * 1024)
    (tmp_path / "acme-2.3.0.bin").write_bytes(newer)
    site.routes["/releases/acme-2.3.0.bin"] = ("file", newer)
    release = {
        "version": "2.3.0",
        "url": site.url("/releases/acme-2.3.0.bin"),
        "sha256": hashlib.sha256(newer).hexdigest(),
        "signature": signing.sign_file(tmp_path / "acme-2.3.0.bin", keys.key),
        "models": [MODEL],
    }
    feed = {"signing_certificate": keys.cert.decode(), "releases": [release]}
    site.routes["/feed.json"] = ("file", json.dumps(feed).encode())
    settings = {
        "firmware_import_ca_file": site.ca,
        "firmware_import_allow_networks": ["127.0.0.0/8"],
    }
    try:
        async with running(Console, tmp_path, sqlite_url, keys, **settings) as console:
            console.browser, console.contexts, console.csp_violations = browser, [], []
            try:
                page = await console.page("fiona", ["firmware_manager"])
                await page.goto("/console/firmware")
                await check_a11y(page)
                form = page.locator("#import-form")
                await form.get_by_label("Image URL (https)").fill("https://10.0.0.1/acme.bin")
                await form.get_by_label("Vendor").fill(VENDOR)
                await form.get_by_role("textbox", name="Version", exact=True).fill("2.2.0")
                await form.get_by_label("Models").fill(MODEL)
                await form.get_by_label("Signature (Base64)").fill(
                    signing.sign_file(image, keys.key)
                )
                await form.get_by_label("Signing certificate (PEM)").fill(keys.cert.decode())
                await form.get_by_role("button", name="Fetch and check").click()
                error = form.locator(".field:has(#import-url) .field-error")
                await expect(error).to_contain_text("Address not allowed")
                await expect(error).to_contain_text("private")
                assert site.seen == []

                url = site.url("/releases/acme-2.2.0.bin")
                await form.get_by_label("Image URL (https)").fill(url)
                await form.get_by_role("button", name="Fetch and check").click()
                await page.wait_for_url("**/console/firmware/*?imported=1")
                await expect(page.locator(".notice")).to_contain_text(f"{VENDOR} 2.2.0")
                await expect(page.get_by_test_id("signature")).to_contain_text("Signature verified")
                source = page.get_by_test_id("source")
                await expect(source).to_contain_text(url)
                await expect(source).to_contain_text("server certificate SHA-256")
                await expect(source).to_contain_text("fiona")
                await check_a11y(page)
                await shot(page, "firmware-imported", full=False)

                # a release feed: watched from the library page, checked on demand
                await page.goto("/console/firmware")
                await page.get_by_text("Watch a release feed").click()
                feed_form = page.locator("#feed-form")
                await feed_form.get_by_label("Vendor").fill(VENDOR)
                await feed_form.get_by_label("Feed URL (https)").fill(site.url("/feed.json"))
                await feed_form.get_by_role("button", name="Watch").click()
                row = page.get_by_test_id("feed-1")
                await expect(row).to_contain_text("never")
                await row.get_by_role("button", name="Check now").click()
                await expect(page.get_by_test_id("feed-1")).to_contain_text("1 imported")
                await expect(
                    page.get_by_role("row").filter(has_text=f"{VENDOR} 2.3.0")
                ).to_contain_text("draft")
                await check_a11y(page)
                no_errors(page)
            finally:
                for context in console.contexts:
                    await context.close()
            assert console.csp_violations == [], console.csp_violations
    finally:
        site.close()
