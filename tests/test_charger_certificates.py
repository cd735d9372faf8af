"""SignCertificate → CertificateSigned, renewal, inventory and expiry end to end (issue 16
§5/§6): evota on real sockets; the charger side is a small raw OCPP-J client here (the
simulator had no CSR support when this was written), on 1.6 and 2.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection

from evota.cli import app as cli_app
from evota.pki.inventory import hash_data
from evota.runtime import Runtime
from evota.sim import Fleet, fleet_from_flags
from evota.store.models import Alert as AlertRow
from tests.conftest import (
    TOKEN,
    ShiftedClock,
    api_client,
    connect,
    provision,
    session_for,
    start_runtime,
)
from tests.pki_fixtures import CPO, Pki, make_csr, new_key
from tests.sim.conftest import fast
from tests.support import until

KEY = "certificates-key-0123456789"
VERSIONS = ["ocpp1.6", "ocpp2.0.1"]
Answer = Callable[[dict[str, Any]], dict[str, Any] | tuple[str, str]]


class RawCharger:
    """One OCPP-J connection driven by hand: sends CALLs, answers evota's CALLs from
    ``answers`` (default Accepted) and remembers them."""

    def __init__(self, ws: ClientConnection, version: str) -> None:
        self.ws, self.version = ws, version
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, Answer] = {}
        self._waiting: dict[str, asyncio.Future[list[Any]]] = {}
        self._n = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg[0] == 2:
                _, mid, action, payload = msg
                self.calls.append((action, payload))
                answer = self.answers.get(action, lambda _p: {"status": "Accepted"})(payload)
                if isinstance(answer, tuple):
                    await self.ws.send(json.dumps([4, mid, answer[0], answer[1], {}]))
                else:
                    await self.ws.send(json.dumps([3, mid, answer]))
            else:
                self._waiting.pop(msg[1]).set_result(msg)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        mid = f"c{self._n}"
        self._waiting[mid] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps([2, mid, action, payload]))
        msg = await asyncio.wait_for(self._waiting[mid], 10)
        assert msg[0] == 3, msg
        return dict(msg[2])

    async def boot(self) -> None:
        if self.version == "ocpp1.6":
            payload: dict[str, Any] = {"chargePointVendor": "Acme", "chargePointModel": "M1"}
        else:
            payload = {
                "chargingStation": {"vendorName": "Acme", "model": "M1"},
                "reason": "PowerUp",
            }
        assert (await self.call("BootNotification", payload))["status"] == "Accepted"

    async def sign(self, csr: bytes | str) -> str:
        text = csr.decode() if isinstance(csr, bytes) else csr
        payload: dict[str, Any] = {"csr": text}
        if self.version != "ocpp1.6":
            payload["certificateType"] = "ChargingStationCertificate"
        return str((await self.call("SignCertificate", payload))["status"])

    async def status(self, status: str) -> None:
        if self.version == "ocpp1.6":
            payload: dict[str, Any] = {"connectorId": 1, "errorCode": "NoError", "status": status}
        else:
            payload = {
                "timestamp": "2026-01-01T00:00:00Z",
                "connectorStatus": "Occupied" if status == "Charging" else status,
                "evseId": 1,
                "connectorId": 1,
            }
        await self.call("StatusNotification", payload)

    def received(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.calls if a == action]

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


async def charger(rt: Runtime, cid: str, version: str, boot: bool = True) -> RawCharger:
    await provision(rt, cid, KEY)
    ch = RawCharger(await connect(rt, cid, KEY, [version]), version)
    if boot:
        await ch.boot()
    return ch


async def entries(rt: Runtime, action: str, target: str | None = None) -> list[Any]:
    return [
        e
        async for e in rt.audit.entries()
        if e.action == action and (target is None or e.target == target)
    ]


async def certificates(rt: Runtime, cid: str) -> dict[str, Any]:
    async with api_client(rt) as api:
        r = await api.get(f"/api/v1/chargers/{cid}/certificates")
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
async def rt_sqlite(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Runtime]:
    runtime = await start_runtime(
        tmp_path, sqlite_url, cpo_name=CPO, cert_inventory_boot_delay_seconds=0
    )
    yield runtime
    await runtime.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_valid_csr_is_signed_sent_and_stored(
    tmp_path: Path, database_url: str, version: str
) -> None:
    rt = await start_runtime(tmp_path, database_url, cpo_name=CPO)
    try:
        cid = "CERT-OK-1"
        ch = await charger(rt, cid, version)
        key = new_key()
        assert await ch.sign(make_csr(key, cid)) == "Accepted"
        (sent,) = await until(lambda: ch.received("CertificateSigned"))
        chain = x509.load_pem_x509_certificates(sent["certificateChain"].encode())
        leaf = chain[0]
        assert chain[1] == rt.charger_ca.certificates()[0]
        leaf.verify_directly_issued_by(rt.charger_ca.certificates()[0])
        assert leaf.public_key() == key.public_key()
        assert leaf.subject.rfc4514_string() == f"O={CPO},CN={cid}"
        if version == "ocpp1.6":
            assert "certificateType" not in sent
        else:
            assert sent["certificateType"] == "ChargingStationCertificate"
        view = await until(lambda: certificates(rt, cid), lambda v: v["current"] is not None)
        current = view["current"]
        assert current["serial"] == format(leaf.serial_number, "x")
        assert current["not_after"].startswith(leaf.not_valid_after_utc.isoformat()[:19])
        assert current["key"] == "EC P-256" and current["status"] == "Accepted"
        (entry,) = await until(lambda: entries(rt, "certificate.signed", cid))
        assert entry.outcome == "Accepted" and entry.detail["serial"] == current["serial"]
        await ch.close()
    finally:
        await rt.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_csrs_are_rejected_and_audited_with_the_reason(
    rt_sqlite: Runtime, version: str
) -> None:
    rt = rt_sqlite
    good = make_csr(new_key(), "CERT-BAD-X")
    der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    forged = x509.load_der_x509_csr(der.replace(b"CERT-BAD-X", b"CERT-BAD-3"))
    cases = {
        "CERT-BAD-1": (make_csr(new_key(), "SOMEONE-ELSE"), "subject_cn_mismatch"),
        "CERT-BAD-2": (make_csr(new_key("rsa", 1024), "CERT-BAD-2"), "key_size"),
        "CERT-BAD-3": (forged.public_bytes(serialization.Encoding.PEM), "bad_signature"),
        "CERT-BAD-4": (make_csr(new_key(), "CERT-BAD-4", "Other CPO"), "subject_o_mismatch"),
        "CERT-BAD-5": (b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n", "unreadable"),
    }
    for cid, (csr, reason) in cases.items():
        ch = await charger(rt, cid, version)
        assert await ch.sign(csr) == "Rejected"
        (entry,) = await until(lambda cid=cid: entries(rt, "certificate.sign_refused", cid))  # type: ignore[misc]
        assert entry.outcome == reason
        assert ch.received("CertificateSigned") == []
        await ch.close()
    assert (await certificates(rt, "CERT-BAD-1"))["signed"] == []


async def test_a_v2g_csr_is_rejected_documented(rt_sqlite: Runtime) -> None:
    """2.0.1 V2GCertificate: ISO 15118 certificates come from a V2G PKI, not this CA."""
    ch = await charger(rt_sqlite, "CERT-V2G", "ocpp2.0.1")
    payload = {"csr": make_csr(new_key(), "CERT-V2G").decode(), "certificateType": "V2GCertificate"}
    assert (await ch.call("SignCertificate", payload))["status"] == "Rejected"
    (entry,) = await until(lambda: entries(rt_sqlite, "certificate.sign_refused", "CERT-V2G"))
    assert entry.outcome == "v2g_not_supported"
    await ch.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_flood_is_limited_and_a_renewal_lifts_the_limit(
    rt_sqlite: Runtime, version: str
) -> None:
    rt, cid = rt_sqlite, "CERT-FLOOD"
    ch = await charger(rt, cid, version)
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
    for _ in range(20):  # a charger with a valid key floods: one signing per interval
        assert await ch.sign(make_csr(new_key(), cid)) == "Rejected"
    for _ in range(5):
        assert await ch.sign(b"junk") == "Rejected"
    await rt.certificates.settled()
    assert len(ch.received("CertificateSigned")) == 1
    refusals = await entries(rt, "certificate.sign_refused", cid)
    assert [e.outcome for e in refusals] == ["rate_limited"]  # audited once per interval

    async with api_client(rt) as api:
        r = await api.post(f"/api/v1/chargers/{cid}/certificates/renew", json={"reason": "test"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Accepted"
    if version == "ocpp1.6":
        (trigger,) = ch.received("ExtendedTriggerMessage")
        assert trigger["requestedMessage"] == "SignChargePointCertificate"
    else:
        (trigger,) = ch.received("TriggerMessage")
        assert trigger["requestedMessage"] == "SignChargingStationCertificate"
    (command,) = await entries(rt, "command.trigger-message", cid)
    assert command.actor == "admin" or command.actor  # the operator's entry, with the answer
    assert command.reason == "test"
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"  # the asked-for CSR passes
    await until(lambda: ch.received("CertificateSigned"), lambda s: len(s) == 2)
    await ch.close()


async def test_a_rejected_certificate_is_recorded_with_the_chargers_answer(
    rt_sqlite: Runtime,
) -> None:
    rt, cid = rt_sqlite, "CERT-NO"
    ch = await charger(rt, cid, "ocpp2.0.1")
    ch.answers["CertificateSigned"] = lambda _p: {"status": "Rejected"}
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
    view = await until(
        lambda: certificates(rt, cid), lambda v: v["signed"] and v["signed"][0]["status"] != "sent"
    )
    assert view["signed"][0]["status"] == "Rejected" and view["current"] is None
    (entry,) = await entries(rt, "certificate.signed", cid)
    assert entry.outcome == "Rejected"
    await ch.close()


def _hash_item(cert: x509.Certificate) -> dict[str, str]:
    data = hash_data(cert, cert)
    return {
        "hashAlgorithm": data.hash_algorithm,
        "issuerNameHash": data.issuer_name_hash,
        "issuerKeyHash": data.issuer_key_hash,
        "serialNumber": data.serial,
    }


@pytest.mark.parametrize("version", VERSIONS)
async def test_inventory_at_boot_and_on_demand_with_known_expiry(
    rt_sqlite: Runtime, version: str
) -> None:
    rt, cid = rt_sqlite, "CERT-INV"
    ca = rt.charger_ca.certificates()[0]
    on_disk = (rt.settings.data_dir / "charger-ca" / "ca.pem").read_bytes()
    assert x509.load_pem_x509_certificate(on_disk) == ca  # the built-in CA, made at start
    await provision(rt, cid, KEY)
    ch = RawCharger(await connect(rt, cid, KEY, [version]), version)
    if version == "ocpp1.6":
        ch.answers["GetInstalledCertificateIds"] = lambda p: (
            {"status": "Accepted", "certificateHashData": [_hash_item(ca)]}
            if p["certificateType"] == "CentralSystemRootCertificate"
            else {"status": "NotFound"}
        )
    else:
        ch.answers["GetInstalledCertificateIds"] = lambda p: (
            {
                "status": "Accepted",
                "certificateHashDataChain": [
                    {
                        "certificateType": "CSMSRootCertificate",
                        "certificateHashData": _hash_item(ca),
                    }
                ],
            }
            if p["certificateType"] == ["CSMSRootCertificate"]
            else {"status": "NotFound"}
        )
    await ch.boot()  # the inventory runs after an accepted boot
    view = await until(lambda: certificates(rt, cid), lambda v: v["installed"])
    assert view["inventory_outcome"] == "ok"
    (held,) = view["installed"]
    assert held["known_as"] == "charger-ca" and held["subject"] == ca.subject.rfc4514_string()
    assert held["not_after"].startswith(ca.not_valid_after_utc.isoformat()[:19])
    asked = len(ch.received("GetInstalledCertificateIds"))
    assert asked == (2 if version == "ocpp1.6" else 4)
    await ch.boot()  # again within EVOTA_CERT_INVENTORY_HOURS: not asked again
    async with api_client(rt) as api:
        r = await api.post(f"/api/v1/chargers/{cid}/certificates/inventory")
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "ok" and r.json()["certificates"] == 1
        r = await api.get("/api/v1/certificates/expiring", params={"days": 3650 * 2 // 2})
        assert r.status_code == 200
        assert [e["source"] for e in r.json()] == ["installed"]
    assert len(ch.received("GetInstalledCertificateIds")) == 2 * asked  # only on demand
    await ch.close()


async def test_a_charger_without_the_security_extension_is_not_asked_at_every_boot(
    rt_sqlite: Runtime,
) -> None:
    rt, cid = rt_sqlite, "CERT-OLD"
    await provision(rt, cid, KEY)
    ch = RawCharger(await connect(rt, cid, KEY, ["ocpp1.6"]), "ocpp1.6")
    ch.answers["GetInstalledCertificateIds"] = lambda _p: ("NotImplemented", "unknown action")
    await ch.boot()
    view = await until(lambda: certificates(rt, cid), lambda v: v["inventory_outcome"] is not None)
    assert view["inventory_outcome"] == "unsupported"
    rt.certificates.inventory_every = timedelta(0)  # even when an inventory would be due
    await ch.boot()
    await ch.call("Heartbeat", {})
    service = rt.certificates  # the boot's inventory check is queued and then done
    await until(lambda: service._queue.empty() and not service._queued and not service._running)
    assert len(ch.received("GetInstalledCertificateIds")) == 1
    await ch.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_expiry_alerts_once_and_renews_only_outside_a_session(
    tmp_path: Path, sqlite_url: str, version: str
) -> None:
    clock = ShiftedClock()
    rt = await start_runtime(tmp_path, sqlite_url, clock=clock, cpo_name=CPO, ca_validity_days=40)
    try:
        cid = "CERT-EXP"
        ch = await charger(rt, cid, version)
        assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
        await until(lambda: certificates(rt, cid), lambda v: v["current"] is not None)
        assert (await rt.certificates.check_expiry()) == {"alerted": [], "renewed": []}

        clock.advance(days=15)  # 25 days left: within EVOTA_CERT_EXPIRY_ALERT_DAYS (30)
        await ch.status("Charging")
        done = await rt.certificates.check_expiry()
        assert len(done["alerted"]) == 1 and done["renewed"] == []  # never during a session
        assert ch.received("ExtendedTriggerMessage") + ch.received("TriggerMessage") == []

        await ch.status("Available")
        done = await rt.certificates.check_expiry()
        assert done["alerted"] == [] and done["renewed"] == [cid]  # alerted once
        async with rt.engine.connect() as conn:
            alerts = (
                await conn.execute(
                    select(AlertRow.subject).where(AlertRow.rule == "certificate_expiring")
                )
            ).all()
        assert len(alerts) == 1 and cid in alerts[0].subject
        (command,) = await entries(rt, "command.trigger-message", cid)
        assert command.actor == "system"
        assert command.reason.startswith("certificate expires at ")
        assert (await rt.certificates.check_expiry())["renewed"] == []  # asked today already
        # the charger answers the trigger with a new CSR, which is signed despite the interval
        assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
        await until(lambda: ch.received("CertificateSigned"), lambda s: len(s) == 2)
        await ch.close()
    finally:
        await rt.stop()


async def test_cli_shows_renews_and_lists(rt_sqlite: Runtime) -> None:
    rt, cid = rt_sqlite, "CERT-CLI"
    ch = await charger(rt, cid, "ocpp1.6")
    assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
    await until(lambda: certificates(rt, cid), lambda v: v["current"] is not None)
    env = {"EVOTA_URL": f"http://127.0.0.1:{rt.http_port}", "EVOTA_TOKEN": TOKEN}

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=env)

    r = await cli("certificate", "show", cid)
    assert r.exit_code == 0, r.output
    assert "current certificate serial" in r.stdout and "Accepted" in r.stdout
    r = await cli("certificate", "renew", cid, "--reason", "cli")
    assert r.exit_code == 0 and "answered Accepted" in r.stdout, r.output
    r = await cli("certificate", "expiring", "--days", "400")
    assert r.exit_code == 0 and cid in r.stdout, r.output
    r = await cli("certificate", "show", "NO-SUCH-CHARGER")
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1, r.output
    await provision(rt, "CERT-CLI-OFF", KEY)  # known but not connected: one line, non-zero
    for command in ("inventory", "renew"):
        r = await cli("certificate", command, "CERT-CLI-OFF")
        assert r.exit_code != 0 and "not connected" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    # The console's charger page: the current certificate, and the renew button for operators
    # (not for viewers, whose role cannot send commands).
    serial = (await certificates(rt, cid))["current"]["serial"]
    for role, button in (("operator", True), ("viewer", False)):
        token = await session_for(rt, role, [role])
        async with api_client(rt, None) as web:
            web.cookies.set("evota_session", token)
            page = await web.get(f"/console/chargers/{cid}")
        assert page.status_code == 200 and serial in page.text
        assert ('id="renew-certificate"' in page.text) is button
    await ch.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_the_simulator_renews_through_evotas_ca(
    tmp_path: Path, sqlite_url: str, version: str
) -> None:
    """The independent charger side: evota's trigger makes the simulator send a CSR made
    with its own key, evota signs it, and the simulator installs what it got only because it
    certifies that key and names the charger (its own checks, evota.sim.tls)."""
    rt = await start_runtime(tmp_path, sqlite_url)  # no CPO name: the simulator says its vendor
    try:
        base = fleet_from_flags(
            1, prefix="CERT-SIM-", seed="cert", protocol=version, firmware_update="both"
        )
        fleet = Fleet.from_spec(base, f"ws://127.0.0.1:{rt.ocpp_port}/ocpp", config=fast())
        await fleet.provision(f"http://127.0.0.1:{rt.http_port}", TOKEN)
        await fleet.start()
        try:
            sim = fleet[base.chargers[0].identity]
            await fleet.wait_until(lambda f: sim.accepted, 10)
            async with api_client(rt) as api:
                r = await api.post(f"/api/v1/chargers/{sim.identity}/certificates/renew")
            assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
            await until(lambda: sim.stats.certificates_installed, lambda n: n == 1)
            view = await until(
                lambda: certificates(rt, sim.identity), lambda v: v["current"] is not None
            )
            assert view["current"]["subject"].endswith(f"CN={sim.identity}")
            assert sim.stats.certificates_rejected == 0
        finally:
            await fleet.stop()
    finally:
        await rt.stop()


async def test_the_operators_own_ca_signs_and_the_server_certificate_is_watched(
    tmp_path: Path, sqlite_url: str, pki: Pki
) -> None:
    """EVOTA_CA_CERT/EVOTA_CA_KEY replace the built-in CA (none is made in the data
    directory), and the expiry watcher reads EVOTA_OCPP_TLS_CERT for the server's own."""
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        cpo_name=CPO,
        ca_cert=pki.charger_ca,
        ca_key=pki.charger_ca_key,
        ocpp_tls_cert=pki.server.cert_path,
        cert_expiry_alert_days=3650,
        cert_auto_renew=False,
    )
    try:
        assert rt.charger_ca.certificates() == [pki.charger_root.cert]
        assert not (rt.settings.data_dir / "charger-ca").exists()
        cid = "CERT-OWN-CA"
        ch = await charger(rt, cid, "ocpp2.0.1")
        assert await ch.sign(make_csr(new_key(), cid)) == "Accepted"
        (sent,) = await until(lambda: ch.received("CertificateSigned"))
        leaf = x509.load_pem_x509_certificates(sent["certificateChain"].encode())[0]
        leaf.verify_directly_issued_by(pki.charger_root.cert)
        await until(lambda: certificates(rt, cid), lambda v: v["current"] is not None)
        done = await rt.certificates.check_expiry()
        await rt.certificates.check_expiry()  # the watcher also ran once at start

        async def subjects() -> list[str]:
            async with rt.engine.connect() as conn:
                rows = await conn.execute(
                    select(AlertRow.subject).where(AlertRow.rule == "certificate_expiring")
                )
                return sorted(r.subject for r in rows)

        expected = sorted(
            [
                f"server certificate {pki.server.serial:x}",
                f"charger CA {pki.charger_root.cert.serial_number:x}",
                f"{cid} {(await certificates(rt, cid))['current']['serial']}",
            ]
        )
        assert await subjects() == expected
        done = await rt.certificates.check_expiry()
        assert done == {"alerted": [], "renewed": []}  # once per certificate; renewal off
        assert await subjects() == expected
        await ch.close()
    finally:
        await rt.stop()


async def _install_and_take_inventory(
    api: httpx.AsyncClient, ch: RawCharger, cid: str, root: x509.Certificate
) -> None:
    """An operator installs ``root`` on the charger, which then reports holding it."""
    r = await api.post(
        f"/api/v1/chargers/{cid}/commands/install-certificate",
        json={
            "certificate_type": "CentralSystemRootCertificate",
            "certificate": root.public_bytes(serialization.Encoding.PEM).decode(),
            "reason": "test",
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
    ch.answers["GetInstalledCertificateIds"] = lambda p: (
        {"status": "Accepted", "certificateHashData": [_hash_item(root)]}
        if p["certificateType"] == "CentralSystemRootCertificate"
        else {"status": "NotFound"}
    )
    r = await api.post(f"/api/v1/chargers/{cid}/certificates/inventory")
    assert r.status_code == 200 and r.json()["certificates"] == 1, r.text


async def test_a_root_an_operator_installed_is_named_with_its_expiry(
    tmp_path: Path, sqlite_url: str, pki: Pki
) -> None:
    """install-certificate's audit entry keeps the root's hash data, so the inventory names
    the root (known_as installed) with its expiry, and the watcher alerts on it."""
    rt = await start_runtime(tmp_path, sqlite_url, cert_expiry_alert_days=3650)
    try:
        cid = "CERT-ROOT"
        ch = await charger(rt, cid, "ocpp1.6")
        root = pki.csms_root.cert
        async with api_client(rt) as api:
            await _install_and_take_inventory(api, ch, cid, root)
        (held,) = (await certificates(rt, cid))["installed"]
        assert held["known_as"] == "installed"
        assert held["subject"] == root.subject.rfc4514_string()
        assert held["not_after"].startswith(root.not_valid_after_utc.isoformat()[:19])
        await rt.certificates.check_expiry()
        async with rt.engine.connect() as conn:
            subjects = (
                await conn.execute(
                    select(AlertRow.subject).where(AlertRow.rule == "certificate_expiring")
                )
            ).scalars()
            assert f"installed root {root.serial_number:x}" in list(subjects)
        await ch.close()
    finally:
        await rt.stop()


async def test_the_installed_roots_are_kept_between_inventories_and_new_ones_read(
    tmp_path: Path, sqlite_url: str, pki: Pki
) -> None:
    """Every inventory read the newest 1,000 install entries of the whole fleet; now they are
    read whole once (and every INSTALLS_FULL_EVERY), then only newer ones: a root installed
    after the first inventory is still named by the next."""
    rt = await start_runtime(tmp_path, sqlite_url)
    try:
        roots = {"ROOT-1": pki.csms_root.cert, "ROOT-2": pki.forged_root.cert}
        async with api_client(rt) as api:
            for cid, root in roots.items():
                ch = await charger(rt, cid, "ocpp1.6")
                await _install_and_take_inventory(api, ch, cid, root)
                if cid == "ROOT-1":
                    read_whole_at = rt.certificates._installs_read_at
                    assert read_whole_at is not None
        assert rt.certificates._installs_read_at == read_whole_at  # ROOT-2: only newer ones
        for cid, root in roots.items():
            (held,) = (await certificates(rt, cid))["installed"]
            assert held["known_as"] == "installed", (cid, held)
            assert held["subject"] == root.subject.rfc4514_string()
    finally:
        await rt.stop()


async def test_install_certificate_with_a_certificate_of_an_unknown_version_is_a_422(
    rt_sqlite: Runtime, pki: Pki
) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for an X.509 version it does
    not know; the parameter check turned that into a 500 before."""
    der = bytearray(pki.csms_root.cert.public_bytes(serialization.Encoding.DER))
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 0x05
    body = base64.encodebytes(bytes(der)).decode()
    pem = f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
    await provision(rt_sqlite, "CERT-V5", KEY)
    async with api_client(rt_sqlite) as api:
        r = await api.post(
            "/api/v1/chargers/CERT-V5/commands/install-certificate",
            json={"certificate_type": "CSMSRootCertificate", "certificate": pem, "reason": "x"},
        )
    assert r.status_code == 422, r.text
    assert "certificate" in r.text and "not a PEM X.509 certificate" in r.text
