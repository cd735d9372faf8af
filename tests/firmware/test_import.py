"""Importing firmware from a vendor's URL, against a real HTTPS server on loopback.

The vendor site (``tests.firmware.vendor_site``) has a CA of its own that evota trusts through
``firmware_import_ca_file``; loopback is reachable only where a test allows 127.0.0.0/8 with
``firmware_import_allow_networks``, as a lab would. Every refusal leaves nothing behind: no
image, no stored blob, no temp file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from evota.firmware import signing
from evota.firmware.import_policy import parse_networks
from evota.firmware.importer import FetchError, FetchPolicy, FetchProblem, fetch_into
from evota.firmware.storage import LocalFirmwareStore
from evota.runtime import Runtime
from evota.store.models import AuditEntry, Firmware
from tests.conftest import Keys, api_client, start_runtime
from tests.firmware.test_firmware_cli import invoke
from tests.firmware.vendor_site import NAME, Site
from tests.support import until
from tests.test_firmware_update import MODEL, VENDOR, Bench, image_bytes, running

LOOPBACK = ["127.0.0.0/8"]
MiB = 1024 * 1024


def signed_fields(tmp_path: Path, keys: Keys, data: bytes) -> dict[str, str]:
    path = tmp_path / f"img-{hashlib.sha256(data).hexdigest()[:8]}.bin"
    path.write_bytes(data)
    return {
        "signature": signing.sign_file(path, keys.key),
        "signing_certificate": keys.cert.decode(),
    }


def request(url: str, version: str = "2.0.0", **fields: Any) -> dict[str, Any]:
    return {"url": url, "vendor": VENDOR, "version": version, "models": [MODEL], **fields}


def nothing_stored(rt: Runtime) -> None:
    store = rt.firmware_store
    assert [p for p in store.blob_dir.rglob("*") if p.is_file()] == []
    assert list(store.tmp_dir.iterdir()) == []


async def images(rt: Runtime) -> list[Any]:
    async with rt.engine.connect() as conn:
        return list((await conn.execute(select(Firmware.version))).scalars())


def problem(r: httpx.Response, status: int, field: str, title: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = dict(r.json())
    assert (doc["field"], doc["title"]) == (field, title), doc
    return doc


@dataclass
class Lab:
    rt: Runtime
    api: httpx.AsyncClient
    site: Site
    tmp_path: Path
    keys: Keys


@contextlib.asynccontextmanager
async def lab(
    tmp_path: Path, url: str, site: Site, keys: Keys, **overrides: Any
) -> AsyncIterator[Lab]:
    settings: dict[str, Any] = {"firmware_import_ca_file": site.ca, **overrides}
    rt = await start_runtime(tmp_path, url, **settings)
    api = api_client(rt)
    try:
        r = await api.post(
            "/api/v1/firmware/trusted-roots",
            json={"vendor": VENDOR, "certificate": keys.ca_cert.decode()},
        )
        assert r.status_code == 201, r.text
        yield Lab(rt, api, site, tmp_path, keys)
    finally:
        await api.aclose()
        await rt.stop()


# -- the happy path, end to end ------------------------------------------------------------


async def test_a_signed_image_is_imported_and_installed_on_a_simulated_charger(
    tmp_path: Path, database_url: str, keys: Keys, site: Site
) -> None:
    data = image_bytes("2.0.0")
    site.routes["/fw/evota-2.0.0.bin"] = ("file", data)
    site.routes["/latest"] = ("redirect", "/fw/evota-2.0.0.bin")
    settings = {"firmware_import_ca_file": site.ca, "firmware_import_allow_networks": LOOPBACK}
    async with running(Bench, tmp_path, database_url, keys, **settings) as b:
        body = request(
            site.url("/latest?token=s3cr3t-download-token"),
            sha256=hashlib.sha256(data).hexdigest(),
            **signed_fields(tmp_path, keys, data),
        )
        r = await b.api.post("/api/v1/firmware/import", json=body)
        assert r.status_code == 201, r.text
        fw = r.json()
        assert fw["signed"] and fw["state"] == "draft" and fw["size"] == len(data)
        assert fw["sha256"] == hashlib.sha256(data).hexdigest()
        assert fw["filename"] == "evota-2.0.0.bin"
        source = fw["source"]
        assert source["url"] == site.url("/fw/evota-2.0.0.bin")  # the last hop, no query
        assert (source["host"], source["address"]) == ("127.0.0.1", "127.0.0.1")
        assert source["certificate_sha256"] == hashlib.sha256(site.cert_der).hexdigest()
        assert source["fetched_by"] and source["fetched_at"]
        shown = (await b.api.get(f"/api/v1/firmware/{fw['id']}")).json()
        assert shown["source"] == source

        async def entries() -> list[Any]:
            async with b.rt.engine.connect() as conn:
                return list((await conn.execute(select(AuditEntry))).all())

        audited = await until(entries, lambda es: any(fw["id"] in (e.target or "") for e in es))
        imported = [e for e in audited if fw["id"] in (e.target or "")]
        assert imported[0].detail["changes"]["source"]["after"]["host"] == "127.0.0.1"
        assert all("s3cr3t" not in json.dumps(e.detail, default=str) for e in audited)

        charger = await b.charger()
        r = await b.update(charger.identity, fw["id"])
        assert r.status_code == 202, r.text
        job = await b.finished(r.json()["job_id"])
        assert job["state"] == "succeeded", job
        assert charger.firmware_version == "2.0.0"


async def test_cli_imports_and_shows_where_the_image_came_from(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    data = image_bytes("2.1.0", 4096)
    site.routes["/fw.bin"] = ("file", data)
    async with lab(tmp_path, sqlite_url, site, keys, firmware_import_allow_networks=LOOPBACK) as x:
        sig = signed_fields(tmp_path, keys, data)
        cert = tmp_path / "signing.cert.pem"
        cert.write_bytes(keys.cert)
        args = ["firmware", "import", site.url("/fw.bin"), "--vendor", VENDOR,
                "--version", "2.1.0", "--model", MODEL, "--signature", sig["signature"],
                "--cert", str(cert), "--json"]  # fmt: skip
        r = await invoke(x.rt, *args)
        assert r.exit_code == 0, r.output
        fw = json.loads(r.stdout)
        assert fw["source"]["host"] == "127.0.0.1"
        r = await invoke(x.rt, "firmware", "show", fw["id"])
        assert r.exit_code == 0 and f"source url:          {site.url('/fw.bin')}" in r.stdout
        r = await invoke(x.rt, *args)  # the version exists now: refused before any fetch
        assert r.exit_code == 1 and "409" in r.output and len(r.output.strip().splitlines()) == 1
        assert [s.path for s in site.seen] == ["/fw.bin"]
        r = await invoke(x.rt, "firmware", "import", "http://127.0.0.1/fw.bin", "--vendor",
                         VENDOR, "--version", "9", "--model", MODEL)  # fmt: skip
        assert r.exit_code == 1 and "plain http is refused" in r.output


# -- SSRF --------------------------------------------------------------------------------


async def test_loopback_private_and_link_local_are_refused_without_the_allowance(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    site.routes["/fw.bin"] = ("file", b"never fetched")
    async with lab(tmp_path, sqlite_url, site, keys) as x:
        for url, what in [
            (site.url("/fw.bin"), "loopback"),
            (f"https://[::1]:{site.port}/fw.bin", "loopback"),
            (f"https://[::ffff:127.0.0.1]:{site.port}/fw.bin", "loopback"),
            ("https://169.254.169.254/latest/meta-data/", "link-local"),
            ("https://10.20.30.40/fw.bin", "private"),
            ("https://[fd12::1]/fw.bin", "unique-local"),
            ("https://0.0.0.0/fw.bin", "unspecified"),
        ]:
            r = await x.api.post("/api/v1/firmware/import", json=request(url))
            doc = problem(r, 422, "url", "Address not allowed")
            assert what in doc["detail"], (url, doc)
        assert site.seen == []
        nothing_stored(x.rt)
        assert await images(x.rt) == []


async def test_a_redirect_to_a_private_address_is_refused(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    site.routes["/to-private"] = ("redirect", "https://10.1.2.3/fw.bin")
    site.routes["/to-metadata"] = ("redirect", "https://169.254.169.254/latest/meta-data/")
    site.routes["/to-http"] = ("redirect", f"http://127.0.0.1:{site.port}/fw.bin")
    site.routes["/loop"] = ("redirect", "/loop")
    async with lab(tmp_path, sqlite_url, site, keys, firmware_import_allow_networks=LOOPBACK) as x:
        for path, title, text in [
            ("/to-private", "Address not allowed", "10.1.2.3"),
            ("/to-metadata", "Address not allowed", "169.254.169.254"),
            ("/to-http", "Scheme not allowed", "plain http"),
            ("/loop", "Too many redirects", "redirects"),
        ]:
            r = await x.api.post("/api/v1/firmware/import", json=request(site.url(path)))
            assert text in problem(r, 422, "url", title)["detail"]
        assert {s.path for s in site.seen} == {"/to-private", "/to-metadata", "/to-http", "/loop"}
        nothing_stored(x.rt)


async def test_the_connection_goes_to_the_address_checked_with_the_name_for_tls(
    tmp_path: Path, site: Site
) -> None:
    """DNS is asked once per hop, and the answer that was checked is the one connected to;
    the TLS name and Host stay the URL's, so the certificate is checked for the name."""
    data = b"pinned image"
    site.routes["/fw.bin"] = ("file", data)
    site.routes["/hop"] = ("redirect", "/fw.bin")
    store = LocalFirmwareStore(tmp_path / "store")
    policy = FetchPolicy(max_bytes=MiB, allow_networks=parse_networks(LOOPBACK), ca_file=site.ca)
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        """Answers a checked address first, an internal one on any later question."""
        asked.append(host)
        return ["127.0.0.1"] if len(asked) <= 2 else ["10.0.0.1"]

    fetched = await fetch_into(store, site.url("/hop", NAME), policy, resolve=rebinding)
    assert asked == [NAME, NAME]  # one question per hop
    assert (fetched.host, fetched.address) == (NAME, "127.0.0.1")
    assert fetched.blob.sha256 == hashlib.sha256(data).hexdigest()
    assert [s.host for s in site.seen] == [f"{NAME}:{site.port}"] * 2

    async def elsewhere(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with pytest.raises(FetchError) as caught:  # the certificate is not for this name
        await fetch_into(store, site.url("/fw.bin", "other.vendor.test"), policy, resolve=elsewhere)
    assert caught.value.problem == FetchProblem.UNREACHABLE
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.detail

    async def split(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "192.168.1.20"]

    seen = len(site.seen)
    with pytest.raises(FetchError) as caught:
        await fetch_into(store, site.url("/fw.bin", NAME), policy, resolve=split)
    assert caught.value.problem == FetchProblem.ADDRESS and "192.168.1.20" in caught.value.detail
    assert len(site.seen) == seen  # never connected


# -- size, time, bytes and signatures ------------------------------------------------------


async def test_too_large_is_stopped_at_the_limit_in_bounded_memory(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    site.routes["/endless"] = ("endless", 64 * 1024)
    site.routes["/declared"] = ("declared", 10 * MiB)
    async with lab(
        tmp_path,
        sqlite_url,
        site,
        keys,
        firmware_import_allow_networks=LOOPBACK,
        firmware_import_max_bytes=2 * MiB,
    ) as x:
        tracemalloc.start()
        try:
            r = await x.api.post("/api/v1/firmware/import", json=request(site.url("/endless")))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "2097152 bytes" in problem(r, 413, "url", "Firmware too large")["detail"]
        assert peak < 8 * MiB, f"peak {peak} bytes"
        r = await x.api.post("/api/v1/firmware/import", json=request(site.url("/declared")))
        assert "10485760 bytes" in problem(r, 413, "url", "Firmware too large")["detail"]
        nothing_stored(x.rt)
        assert await images(x.rt) == []
    # the server was cut off: it could not push more than the limit plus socket buffers
    assert site.sent["/endless"] < 16 * MiB


async def test_a_stalled_or_trickling_server_times_out(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    site.routes["/stall"] = ("stall", None)
    site.routes["/trickle"] = ("trickle", 0.05)
    async with lab(
        tmp_path,
        sqlite_url,
        site,
        keys,
        firmware_import_allow_networks=LOOPBACK,
        firmware_import_timeout=0.5,
        firmware_import_deadline=1.5,
    ) as x:
        r = await x.api.post("/api/v1/firmware/import", json=request(site.url("/stall")))
        assert "0.5 s" in problem(r, 422, "url", "Fetch timed out")["detail"]
        r = await x.api.post("/api/v1/firmware/import", json=request(site.url("/trickle")))
        assert "1.5 s" in problem(r, 422, "url", "Fetch timed out")["detail"]
        nothing_stored(x.rt)


async def test_imports_in_flight_are_bounded(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    """A short request makes the server download up to the size limit: at most
    firmware_import_max_concurrent imports run at once, the next is a 429 at once."""
    site.routes["/stall"] = ("stall", None)
    site.routes["/fw.bin"] = ("file", b"unsigned image")
    nets = {"firmware_import_allow_networks": LOOPBACK, "firmware_import_max_concurrent": 2}
    async with lab(tmp_path, sqlite_url, site, keys, **nets) as x:
        url = "/api/v1/firmware/import"
        stalled = [
            asyncio.create_task(x.api.post(url, json=request(site.url("/stall"), f"9.{i}")))
            for i in range(2)
        ]
        await until(lambda: len(site.seen), lambda n: n == 2)
        r = await x.api.post(url, json=request(site.url("/fw.bin"), "9.9"))
        problem(r, 429, "url", "Too many imports")
        assert len(site.seen) == 2  # refused before fetching
        site.release.set()
        for task in stalled:
            problem(await task, 422, "url", "Fetch failed")  # the body was cut short
        r = await x.api.post(url, json=request(site.url("/fw.bin"), "9.9"))
        problem(r, 422, "signature", "Unsigned firmware")  # fetched: the slots are free
        nothing_stored(x.rt)


async def test_bad_signatures_are_refused_and_nothing_is_stored(
    tmp_path: Path, database_url: str, keys: Keys, site: Site
) -> None:
    data = image_bytes("3.0.0", 8192)
    site.routes["/fw.bin"] = ("file", data)
    rogue_ca_key, rogue_ca = signing.generate_ca("Mallory Root", "Mallory")
    rogue_key, rogue_cert = signing.generate_signing_key(
        "Evota Release", "Mallory", ca_key=rogue_ca_key, ca_cert=rogue_ca
    )
    other = signed_fields(tmp_path, keys, data + b"tampered")
    async with lab(
        tmp_path, database_url, site, keys, firmware_import_allow_networks=LOOPBACK
    ) as x:
        url = site.url("/fw.bin")
        r = await x.api.post("/api/v1/firmware/import", json=request(url, **other))
        problem(r, 422, "signature", "Invalid signature")
        path = tmp_path / "rogue.bin"
        path.write_bytes(data)
        rogue = {
            "signature": signing.sign_file(path, rogue_key),
            "signing_certificate": rogue_cert.decode(),
        }
        r = await x.api.post("/api/v1/firmware/import", json=request(url, **rogue))
        problem(r, 422, "signing_certificate", "Untrusted certificate")
        r = await x.api.post("/api/v1/firmware/import", json=request(url))  # unsigned
        problem(r, 422, "signature", "Unsigned firmware")
        nothing_stored(x.rt)
        assert await images(x.rt) == []


async def test_a_wrong_sha256_or_a_compressed_body_is_refused(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    data = image_bytes("3.1.0", 4096)
    site.routes["/fw.bin"] = ("file", data)
    site.routes["/fw.bin.gz"] = ("gzip", data)
    async with lab(tmp_path, sqlite_url, site, keys, firmware_import_allow_networks=LOOPBACK) as x:
        body = request(site.url("/fw.bin"), sha256="0" * 64, **signed_fields(tmp_path, keys, data))
        r = await x.api.post("/api/v1/firmware/import", json=body)
        assert (
            hashlib.sha256(data).hexdigest()
            in problem(r, 422, "sha256", "Digest mismatch")["detail"]
        )
        r = await x.api.post("/api/v1/firmware/import", json={**body, "sha256": "xyz"})
        problem(r, 422, "sha256", "Invalid request")
        body = request(site.url("/fw.bin.gz"), **signed_fields(tmp_path, keys, data))
        r = await x.api.post("/api/v1/firmware/import", json=body)
        assert "gzip" in problem(r, 422, "url", "Fetch failed")["detail"]
        nothing_stored(x.rt)


async def test_plain_http_is_refused_unless_allowed(
    tmp_path: Path, sqlite_url: str, keys: Keys
) -> None:
    site = Site(tmp_path / "plain", plain=True)
    try:
        data = image_bytes("4.0.0", 4096)
        site.routes["/fw.bin"] = ("file", data)
        fields = signed_fields(tmp_path, keys, data)
        nets = {"firmware_import_allow_networks": LOOPBACK}
        async with lab(tmp_path / "a", sqlite_url, site, keys, **nets) as x:
            r = await x.api.post("/api/v1/firmware/import", json=request(site.url("/fw.bin")))
            assert "plain http" in problem(r, 422, "url", "Scheme not allowed")["detail"]
            for url in ("ftp://fw.vendor.example/a.bin", "file:///etc/passwd"):
                r = await x.api.post("/api/v1/firmware/import", json=request(url))
                problem(r, 422, "url", "Scheme not allowed")
            assert site.seen == []
        tmp_b = tmp_path / "b"
        async with lab(tmp_b, f"sqlite+aiosqlite:///{tmp_b}.db", site, keys,
                       firmware_import_allow_http=True, **nets) as x:  # fmt: skip
            body = request(site.url("/fw.bin"), **fields)
            r = await x.api.post("/api/v1/firmware/import", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["source"]["certificate_sha256"] is None
    finally:
        site.close()


async def test_bad_requests_name_their_field(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    async with lab(tmp_path, sqlite_url, site, keys) as x:
        for body, field in [
            ({"vendor": VENDOR, "version": "1", "models": [MODEL]}, "url"),
            (request("https://user:pw@fw.vendor.example/a.bin"), "url"),
            (request("https://x.example/" + "a" * 3000), "url"),
            (request("https://fw.vendor.example/a.bin", extra=1), "extra"),
        ]:
            r = await x.api.post("/api/v1/firmware/import", json=body)
            assert r.status_code == 422 and r.json()["field"] == field, r.text
        for url in (
            "https://ex%41mple.com/fw.bin",
            "https://" + "a" * 64 + ".example/fw.bin",
            "https://a..b/fw.bin",
            "https://[::1/fw.bin",
            "https://\u00e9xample.\u4e2d\u56fd/fw.bin",
            "https://-bad-.example/fw.bin",
        ):
            r = await x.api.post("/api/v1/firmware/import", json=request(url))
            assert r.status_code == 422 and r.json()["field"] == "url", (url, r.text)
        # a name that does not resolve: a 4xx naming url, not a 5xx
        r = await x.api.post(
            "/api/v1/firmware/import", json=request("https://no-such-host.invalid/fw.bin")
        )
        problem(r, 422, "url", "Fetch failed")
