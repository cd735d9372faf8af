"""Per-charger security profiles, enforced (issue 16 §3), and the certificate rules they use.

The pure rules (evota.pki.identity, evota.fleet.security_profiles) with an injected time;
then, end to end over real sockets: a charger connecting below its profile is refused, leaves
a security event and raises one alert however often it tries; operators see and change the
profile in the API, the CLI and the console, lowering it only through four eyes.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization

from evota.fleet import security_profiles as sp
from evota.fleet.security_profiles import Channel
from evota.pki import identity
from tests import pki_fixtures
from tests.conftest import api_client, connect, provision, session_for, start_runtime
from tests.gateway.test_tls import client_context, status_of, tls_settings, wss
from tests.pki_fixtures import CHARGER_ID, CPO, Pki, make_crl
from tests.test_cli import invoke

pki = pki_fixtures.pki  # the fixture: fresh test certificates per test
KEY = "profile-key-0123456789"


# -- pure: what a client certificate must say ------------------------------------------------


def _trust(pki: Pki, cpo: str | None = CPO) -> identity.Trust:
    authorities = identity.load_authorities(pki.charger_ca.read_bytes())
    return identity.Trust(
        authorities, identity.load_revoked(pki.crl.read_bytes(), authorities), cpo
    )


def test_the_certificate_rules_name_each_refusal(pki: Pki) -> None:
    trust, now = _trust(pki), pki.now
    starts = pki.not_yet_valid.cert.not_valid_before_utc
    assert identity.problem(pki.good.cert, CHARGER_ID, trust, now) is None
    reasons = {
        name: identity.problem(getattr(pki, name).cert, CHARGER_ID, trust, now)
        for name in (
            "wrong_ca",
            "self_signed",
            "expired",
            "not_yet_valid",
            "wrong_cn",
            "wrong_o",
            "revoked",
        )
    }
    assert reasons == {
        "wrong_ca": "not signed by a trusted charger CA",  # a look-alike CA: same name, other key
        "self_signed": "not signed by a trusted charger CA",
        "expired": f"expired on {pki.expired.not_after.isoformat()}",
        "not_yet_valid": f"not valid before {starts.isoformat()}",
        "wrong_cn": f"subject CN '{CHARGER_ID}-OTHER' is not the charger id '{CHARGER_ID}'",
        "wrong_o": f"subject O 'someone-else-cpo' is not the CPO name '{CPO}'",
        "revoked": f"revoked (serial {pki.revoked.serial:x})",
    }
    # The time is the caller's: the good certificate expires a year on.
    later = pki.good.not_after + timedelta(seconds=1)
    assert identity.problem(pki.good.cert, CHARGER_ID, trust, later).startswith("expired")
    # Another charger's id; no O check without a CPO name; no O at all with one.
    assert "is not the charger id" in identity.problem(pki.good.cert, "TLS-CP-2", trust, now)
    assert identity.problem(pki.wrong_o.cert, CHARGER_ID, _trust(pki, None), now) is None
    no_o = pki.mint(CHARGER_ID, o="")
    assert identity.problem(no_o.cert, CHARGER_ID, trust, now) == (
        f"subject O None is not the CPO name '{CPO}'"
    )
    rsa = pki.mint(CHARGER_ID, key_type="rsa")
    assert identity.problem(rsa.cert, CHARGER_ID, trust, now) is None


def test_ca_and_crl_files_are_checked(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(identity.IdentityError, match="not a CA certificate"):
        identity.load_authorities(pki.good.cert_path.read_bytes())
    with pytest.raises(identity.IdentityError, match=r"holds no certificate|not a PEM"):
        identity.load_authorities(b"not a certificate")
    authorities = identity.load_authorities(pki.charger_ca.read_bytes())
    forged = make_crl(pki.forged_root, [pki.good.serial], pki.now)
    with pytest.raises(identity.IdentityError, match="not signed by a configured charger CA"):
        identity.load_revoked(forged.public_bytes(serialization.Encoding.PEM), authorities)
    der = make_crl(pki.charger_root, [7], pki.now).public_bytes(serialization.Encoding.DER)
    issuer = pki.charger_root.cert.subject.public_bytes()
    assert identity.load_revoked(der, authorities) == {(issuer, 7)}


def test_a_forwarded_certificate_is_parsed_strictly(pki: Pki) -> None:
    pem = pki.good.cert_path.read_text()
    assert identity.from_header(quote(pem)) == pki.good.cert
    assert identity.from_header(pem) == pki.good.cert
    der = pki.good.cert.public_bytes(serialization.Encoding.DER)
    import base64

    assert identity.from_header(base64.b64encode(der).decode()) == pki.good.cert
    for junk in ("", "%ZZ", "-----BEGIN CERTIFICATE-----\nxx", "a" * (identity.MAX_PEM + 1), "é"):
        with pytest.raises(identity.IdentityError):
            identity.from_header(junk)


def _odd_version_pem(pki: Pki) -> str:
    """The good certificate with an X.509 version cryptography does not know (InvalidVersion,
    which is no ValueError)."""
    der = bytearray(pki.good.cert.public_bytes(serialization.Encoding.DER))
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 0x05
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def test_what_cryptography_cannot_read_is_a_refusal_not_a_crash(pki: Pki) -> None:
    odd = _odd_version_pem(pki)
    for header in (odd, quote(odd)):
        with pytest.raises(identity.IdentityError):
            identity.from_header(header)
    with pytest.raises(identity.IdentityError):
        identity.load_authorities(odd.encode())
    # Signed by the charger CA, with a basicConstraints that is not DER: read only on use.
    from tests.gateway.test_tls import _malformed_extension

    reason = identity.problem(_malformed_extension(pki), CHARGER_ID, _trust(pki), pki.now)
    assert reason is not None and reason.startswith("unreadable certificate")


def test_the_profile_rules() -> None:
    plain, tls, mtls = Channel(), Channel(tls=True), Channel(tls=True, certificate=True)
    assert [c.profile for c in (plain, tls, mtls)] == [1, 2, 3]
    assert sp.downgrade(1, plain) is None and sp.downgrade(2, tls) is None
    assert sp.downgrade(3, mtls) is None and sp.downgrade(1, mtls) is None
    assert "needs TLS" in (sp.downgrade(2, plain) or "")
    assert "needs TLS" in (sp.downgrade(3, plain) or "")
    assert "client certificate" in (sp.downgrade(3, tls) or "")
    # Only a verified certificate on a profile-3 charger replaces the password.
    assert not sp.password_required(3, mtls)
    assert sp.password_required(2, mtls) and sp.password_required(3, tls)
    assert sp.lowers(3, 2) and not sp.lowers(2, 3) and not sp.lowers(2, 2)


# -- enforced at every connection --------------------------------------------------------------


async def _alerts(api: Any, subject: str) -> list[dict[str, Any]]:
    r = await api.get("/api/v1/alerts", params={"rule": "security_event", "subject": subject})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_a_downgrade_is_refused_recorded_and_alerted_once(
    tmp_path: Path,
    database_url: str,
    pki: Pki,
) -> None:
    rt = await start_runtime(tmp_path, database_url, **tls_settings(pki))
    try:
        await provision(rt, "CP-P1", KEY)
        await provision(rt, "CP-P2", KEY, security_profile=2)
        await provision(rt, CHARGER_ID, KEY, security_profile=3)
        ws = await connect(rt, "CP-P1", KEY)  # profile 1 keeps working over ws://
        await ws.close()
        for _ in range(3):
            assert await status_of(connect(rt, "CP-P2", KEY)) == 403
        assert await status_of(connect(rt, CHARGER_ID, KEY)) == 403  # ws:// for profile 3
        assert await status_of(wss(rt, client_context(pki.server_ca), CHARGER_ID, KEY)) == 403
        # A wrong key is an ordinary 401, not a downgrade: ids are not revealed.
        assert await status_of(connect(rt, "CP-P2", "wrong-key-0123456789")) == 401
        assert await status_of(connect(rt, "CP-NOBODY", KEY)) == 401
        assert not rt.gateway.is_connected("CP-P2")
        await rt.fleet.writer.flush()
        await rt.alerts.drain()
        async with api_client(rt) as api:
            events = (await api.get("/api/v1/chargers/CP-P2")).json()["recent_events"]
            downgrades = [e for e in events if e["status"] == sp.DOWNGRADE]
            assert len(downgrades) == 3 and downgrades[0]["kind"] == "security_event"
            alerts = await _alerts(api, "CP-P2")
            assert len(alerts) == 1  # deduplicated like every security alert
            assert alerts[0]["detail"]["event"] == sp.DOWNGRADE
            assert "needs TLS" in alerts[0]["detail"]["tech_info"]
            assert len(await _alerts(api, CHARGER_ID)) == 1
            assert await _alerts(api, "CP-P1") == []
        # Over TLS the profile-2 charger is in.
        async with await wss(rt, client_context(pki.server_ca), "CP-P2", KEY):
            assert rt.gateway.is_connected("CP-P2")
    finally:
        await rt.stop()


async def test_repeated_downgrades_are_throttled(tmp_path: Path, sqlite_url: str, pki: Pki) -> None:
    rt = await start_runtime(
        tmp_path, sqlite_url, charger_auth_failures_per_id=3, **tls_settings(pki)
    )
    try:
        await provision(rt, "CP-P2", KEY, security_profile=2)
        for _ in range(3):
            assert await status_of(connect(rt, "CP-P2", KEY)) == 403
        assert await status_of(connect(rt, "CP-P2", KEY)) == 429  # no more rows for a while
    finally:
        await rt.stop()


# -- visible and changeable by operators ------------------------------------------------------


async def test_operators_see_and_change_the_profile(
    tmp_path: Path,
    sqlite_url: str,
    pki: Pki,
) -> None:
    rt = await start_runtime(
        tmp_path, sqlite_url, approval_actions=["charger.credentials"], **tls_settings(pki)
    )
    try:
        created = await provision(rt, "CP-A", KEY)
        assert created["security_profile"] == 1
        await provision(rt, "CP-B", KEY, security_profile=3)
        async with api_client(rt) as api:
            # Raising: charger.write, at once, audited.
            r = await api.patch("/api/v1/chargers/CP-A", json={"security_profile": 3})
            assert r.status_code == 200 and r.json()["security_profile"] == 3, r.text
            page = (await api.get("/api/v1/chargers")).json()
            assert {c["id"]: c["security_profile"] for c in page["items"]} == {"CP-A": 3, "CP-B": 3}
            audit = await api.get("/api/v1/audit", params={"action": "api.update_charger"})
            entry = audit.json()["items"][0]
            assert entry["target"] == "CP-A"
            assert entry["detail"]["changes"]["security_profile"] == {"before": 1, "after": 3}
            # Lowering weakens authentication: four eyes (charger.credentials).
            r = await api.patch(
                "/api/v1/chargers/CP-A", json={"security_profile": 1, "reason": "fallback"}
            )
            assert r.status_code == 202 and r.json()["action"] == "charger.credentials", r.text
            assert (await api.get("/api/v1/chargers/CP-A")).json()["security_profile"] == 3
            for bad in (0, 4, "two", None):
                r = await api.patch("/api/v1/chargers/CP-A", json={"security_profile": bad})
                assert r.status_code == 422 and r.json()["field"].startswith("security_profile")
        shown = await invoke(rt, "charger", "show", "CP-A")
        assert shown.exit_code == 0 and "security_profile │ 3" in shown.output, shown.output
        listed = await invoke(rt, "charger", "list")
        assert listed.exit_code == 0 and "(3)" in listed.output, listed.output  # registration (3)
        bad = await invoke(rt, "charger", "update", "CP-A", "--security-profile", "5")
        assert bad.exit_code != 0 and "security-profile" in bad.output
        raised = await invoke(rt, "charger", "update", "CP-B", "--security-profile", "3")
        assert raised.exit_code == 0 and "security profile 3" in raised.output, raised.output
        # The console: the charger page and the fleet's profile mix on the overview.
        token = await session_for(rt, "viewer", ["viewer"])
        async with api_client(rt, None) as web:
            web.cookies.set("evota_session", token)
            page = await web.get("/console/chargers/CP-B")
            assert page.status_code == 200
            assert 'data-testid="security-profile">3' in page.text
            overview = await web.get("/console/")
            assert '<span data-stat="profile-3">2</span>' in overview.text
            assert '<span data-stat="profile-1">0</span>' in overview.text
    finally:
        await rt.stop()


async def test_a_profile_evota_cannot_serve_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    rt = await start_runtime(tmp_path, sqlite_url)  # no TLS listener, no proxy, no charger CA
    try:
        async with api_client(rt) as api:
            for profile in (2, 3):
                r = await api.post(
                    "/api/v1/chargers",
                    json={"id": "CP-X", "auth_key": KEY, "security_profile": profile},
                )
                assert r.status_code == 422 and r.json()["field"] == "security_profile", r.text
            await provision(rt, "CP-X", KEY)
            r = await api.patch("/api/v1/chargers/CP-X", json={"security_profile": 2})
            assert r.status_code == 422 and "EVOTA_OCPP_TLS_PORT" in r.json()["detail"]
    finally:
        await rt.stop()


async def test_plain_ws_can_be_switched_off(tmp_path: Path, sqlite_url: str, pki: Pki) -> None:
    rt = await start_runtime(tmp_path, sqlite_url, ocpp_plain=False, **tls_settings(pki))
    try:
        assert rt.ocpp_port == 0 and rt.ocpp_tls_port
        await provision(rt, "CP-P2", KEY, security_profile=2)
        async with await wss(rt, client_context(pki.server_ca), "CP-P2", KEY):
            pass
    finally:
        await rt.stop()


def test_tls_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    from evota.config import Settings

    for bad, field in (
        ({"ocpp_tls_port": 0}, "ocpp_tls_cert"),
        ({"ocpp_plain": False}, "ocpp_plain"),
        ({"ocpp_crl": pki.crl}, "ocpp_crl"),
        ({"ocpp_client_cert_header": "X Client:Cert"}, "header name"),
    ):
        with pytest.raises(ValueError, match=field):
            Settings(**bad)
