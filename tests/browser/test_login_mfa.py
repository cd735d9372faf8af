"""Logging in through the login page, enrolling a second factor, logging in with it."""

from __future__ import annotations

from playwright.async_api import expect

from .conftest import PASSWORD, Console, check_a11y, no_errors, shot, totp


async def test_login_enrol_mfa_and_log_in_with_the_code(console: Console):
    await console.user("alice", ["operator"])
    page = await console.page()

    # A console page without a session leads to the login page, and back after it.
    await page.goto("/console/chargers")
    await expect(page).to_have_url(f"{console.base}/login?next=%2Fconsole%2Fchargers")
    await check_a11y(page)
    await shot(page, "login")

    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator(".field:has(#login-password) .field-error")).to_contain_text(
        "Login failed"
    )

    # An operator must enrol before changing anything: the console goes to enrolment.
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{console.base}/console/mfa")
    await expect(page.locator(".banner")).to_contain_text("second factor")
    await page.get_by_role("button", name="Start enrolment").click()
    await expect(page.locator("#mfa-secret-text")).not_to_be_empty()
    secret = (await page.locator("#mfa-secret-text").text_content() or "").strip()
    assert len(secret) >= 16
    qr = page.get_by_role("img", name="QR code of the enrolment link for your authenticator app")
    await expect(qr).to_be_visible()
    assert await qr.evaluate("img => img.complete && img.naturalWidth > 0")  # the SVG loaded
    await check_a11y(page)
    await shot(page, "mfa-enrolment")

    await page.get_by_label("Code from the app").fill("12345")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.locator(".field:has(#mfa-otp) .field-error")).to_contain_text("Wrong code")
    await page.get_by_label("Code from the app").fill(totp(secret))
    await page.get_by_role("button", name="Confirm").click()
    codes = page.locator("#mfa-code-list li")
    await expect(codes.first).to_be_visible()
    assert await codes.count() >= 8
    await expect(page.locator(".banner")).to_have_count(0)
    await page.get_by_role("link", name="Continue to the console").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Fleet overview")

    # Log out, then in again: the password alone is not enough any more.
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{console.base}/login")
    await page.goto("/console/")
    await expect(page).to_have_url(f"{console.base}/login?next=%2Fconsole%2F")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    otp_error = page.locator(".field:has(#login-otp) .field-error")
    await expect(otp_error).to_contain_text("Enter your one-time code")
    await expect(page.get_by_label("One-time code")).to_be_focused()
    valid = {totp(secret, k) for k in (-1, 0, 1, 2)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in valid)
    await page.get_by_label("One-time code").fill(wrong)
    await page.get_by_role("button", name="Log in").click()
    await expect(otp_error).to_contain_text("Login failed")
    # The enrolment used this step's code; a code is accepted once, so take the next one.
    await page.get_by_label("One-time code").fill(totp(secret, 1))
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Fleet overview")
    await page.goto("/console/mfa")
    await expect(page.get_by_test_id("mfa-state")).to_contain_text("this login used it")
    no_errors(page)

    # Both logins are in the audit log, with their outcome.
    entries = (
        await console.api.get("/api/v1/audit", params={"action": "auth.login", "actor": "alice"})
    ).json()["items"]
    outcomes = [e["outcome"] for e in reversed(entries)]
    assert outcomes[0] == "failed" and outcomes.count("ok") == 2, outcomes
