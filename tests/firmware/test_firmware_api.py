"""The firmware repository API against a real evota: streamed uploads, signatures, lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from evota.api.multipart import MultipartError, MultipartParser, PartEnd, PartStart
from evota.files import safe_filename
from evota.firmware import signing
from evota.store.models import Charger
from tests.conftest import api_client, provision, start_runtime

BOUNDARY = "evota-test-boundary-7d2f"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


class Keys:
    """A trusted root with a signing key it issued, and an untrusted one."""

    def __init__(self) -> None:
        self.ca_key, self.ca_cert = signing.generate_ca("Acme Root", "Acme")
        self.key, self.cert = signing.generate_signing_key(
            "Acme Release", "Acme", ca_key=self.ca_key, ca_cert=self.ca_cert
        )
        other_ca_key, other_ca = signing.generate_ca("Mallory Root", "Mallory")
        self.rogue_key, self.rogue_cert = signing.generate_signing_key(
            "Acme Release", "Mallory", ca_key=other_ca_key, ca_cert=other_ca
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def sign(tmp_path: Path, data: bytes, key: bytes) -> str:
    path = tmp_path / f"sign-{hashlib.sha256(data).hexdigest()[:8]}.bin"
    path.write_bytes(data)
    return signing.sign_file(path, key)


def blob_files(rt: Any) -> list[Path]:
    return sorted(p for p in rt.firmware_store.blob_dir.rglob("*") if p.is_file())


def temp_files(rt: Any) -> list[Path]:
    return sorted(p for p in rt.firmware_store.tmp_dir.iterdir())


async def trust(api: Any, keys: Keys, vendor: str = "Acme") -> dict[str, Any]:
    r = await api.post(
        "/api/v1/firmware/trusted-roots",
        json={"vendor": vendor, "certificate": keys.ca_cert.decode()},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def upload(
    api: Any,
    data: bytes,
    *,
    version: str = "1.0.0",
    vendor: str = "Acme",
    models: list[str] | None = None,
    filename: str = "fw.bin",
    **fields: Any,
) -> Any:
    form: dict[str, Any] = {"vendor": vendor, "version": version, "models": models or ["M1"]}
    form.update(fields)
    return await api.post("/api/v1/firmware", data=form, files={"file": (filename, data)})


async def upload_signed(api: Any, tmp_path: Path, keys: Keys, data: bytes, **fields: Any) -> Any:
    fields.setdefault("signature", sign(tmp_path, data, keys.key))
    fields.setdefault("signing_certificate", keys.cert.decode())
    return await upload(api, data, **fields)


def body(fields: list[tuple[str, str | bytes]], file: bytes | None = None) -> bytes:
    out = b""
    for name, value in fields:
        raw = value.encode() if isinstance(value, str) else value
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + raw
            + b"\r\n"
        )
    if file is not None:
        out += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + file
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def problem(r: Any, status: int, field: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = dict(r.json())
    assert doc.get("field") == field, doc
    return doc


# --- uploads -------------------------------------------------------------------------------


async def test_signed_upload_is_stored_hashed_and_shown(evota, tmp_path, keys):
    data = b"\x7fELF signed image " * 5000
    await provision(evota, "CP-1", "0123456789abcdef")
    await provision(evota, "CP-2", "0123456789abcdef")
    async with evota.engine.begin() as conn:
        await conn.execute(update(Charger).values(vendor="ACME", firmware_version="2.4.0"))
    async with api_client(evota) as api:
        await trust(api, keys)
        r = await upload_signed(
            api,
            tmp_path,
            keys,
            data,
            version="2.4.0",
            models=["M1", "M2"],
            hardware_revisions=["r2"],
            release_notes="Fixes the 11 kW derating. ✓",
            state="pilot",
            min_current_version="2.0.0",
            supersedes=["2.3.9"],
            filename="..\\builds/acme-2.4.0.bin",
        )
        assert r.status_code == 201, r.text
        fw = r.json()
        assert fw["sha256"] == hashlib.sha256(data).hexdigest() and fw["size"] == len(data)
        assert fw["filename"] == "acme-2.4.0.bin"
        assert (fw["models"], fw["hardware_revisions"]) == (["M1", "M2"], ["r2"])
        assert (fw["state"], fw["signed"], fw["supersedes"]) == ("pilot", True, ["2.3.9"])
        assert fw["min_current_version"] == "2.0.0" and fw["release_notes"].endswith("✓")
        shown = (await api.get(f"/api/v1/firmware/{fw['id']}")).json()
        assert shown["chargers_running"] == 2
        assert {k: v for k, v in shown.items() if k != "chargers_running"} == {
            k: v for k, v in fw.items() if k != "chargers_running"
        }
    path = evota.firmware_store.path_of(fw["sha256"])
    assert path is not None and path.read_bytes() == data
    assert temp_files(evota) == []


async def test_bad_signatures_and_untrusted_certificates_are_refused(evota, tmp_path, keys):
    data = b"image A" * 1000
    async with api_client(evota) as api:
        r = await upload_signed(api, tmp_path, keys, data)
        doc = problem(r, 422, "signing_certificate")
        assert "no trusted roots" in doc["detail"]
        await trust(api, keys)
        other = sign(tmp_path, b"a different image", keys.key)
        doc = problem(
            await upload_signed(api, tmp_path, keys, data, signature=other), 422, "signature"
        )
        assert "signature does not match the file" in doc["detail"]
        rogue = {"signature": sign(tmp_path, data, keys.rogue_key)}
        rogue["signing_certificate"] = keys.rogue_cert.decode()
        doc = problem(
            await upload_signed(api, tmp_path, keys, data, **rogue), 422, "signing_certificate"
        )
        assert "not issued by a trusted root for vendor Acme" in doc["detail"]
        # The right pair for another vendor's roots does not count either.
        doc = problem(
            await upload_signed(api, tmp_path, keys, data, vendor="Other"),
            422,
            "signing_certificate",
        )
        problem(
            await upload_signed(api, tmp_path, keys, data, signature="!!not base64!!"),
            422,
            "signature",
        )
        problem(
            await upload_signed(api, tmp_path, keys, data, signing_certificate="-----BEGIN junk"),
            422,
            "signing_certificate",
        )
        sig = sign(tmp_path, data, keys.key)
        problem(await upload(api, data, signature=sig), 422, "signing_certificate")
        problem(await upload(api, data, signing_certificate=keys.cert.decode()), 422, "signature")
    assert blob_files(evota) == [] and temp_files(evota) == []


async def test_unsigned_is_refused_until_the_vendor_allows_it(evota):
    async with api_client(evota) as api:
        doc = problem(await upload(api, b"plain image"), 422, "signature")
        assert "unsigned firmware is refused for vendor Acme" in doc["detail"]
        r = await api.put("/api/v1/firmware/vendors/acme", json={"allow_unsigned": True})
        assert r.status_code == 200 and r.json()["allow_unsigned"] is True
        r = await upload(api, b"plain image")
        assert r.status_code == 201 and r.json()["signed"] is False
        # The policy row keeps its first spelling; a later PUT in another case updates it.
        r = await api.put("/api/v1/firmware/vendors/ACME", json={"allow_unsigned": False})
        assert r.json()["vendor"] == "acme"
        page = (await api.get("/api/v1/firmware/vendors")).json()
        assert page["items"] == [
            {"vendor": "acme", "allow_unsigned": False, "updated_at": r.json()["updated_at"]}
        ]
        problem(await upload(api, b"plain image 2", version="1.0.1"), 422, "signature")
        r = await api.put("/api/v1/firmware/vendors/x", json={"allow_unsigned": "maybe"})
        problem(r, 422, "allow_unsigned")


async def test_duplicates_conflict_and_identical_content_is_stored_once(evota):
    data = b"same bytes" * 100
    async with api_client(evota) as api:
        await api.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
        first = (await upload(api, data, version="1.0")).json()
        second = (await upload(api, data, version="1.1")).json()
        assert first["sha256"] == second["sha256"] and first["id"] != second["id"]
        problem(await upload(api, b"other bytes", version="1.0"), 409, "version")
        problem(await upload(api, data, version="1.0", vendor="ACME"), 409, "version")
        # A refused re-upload of stored bytes must not delete the blob the images use.
        problem(await upload(api, data, version="2.0", state="revoked"), 422, "state")
    assert len(blob_files(evota)) == 1 and temp_files(evota) == []
    assert evota.firmware_store.path_of(first["sha256"]) is not None


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"vendor": None}, "vendor"),
    ({"version": None}, "version"),
    ({"models": None}, "models"),
    ({"version": "x" * 51}, "version"),
    ({"vendor": "   "}, "vendor"),
    ({"version": "1.0\n2"}, "version"),
    ({"state": "revoked"}, "state"),
    ({"min_current_version": "y" * 60}, "min_current_version"),
    ({"colour": "red"}, "colour"),
    ({"hardware_revisions": ["ok", ""]}, "hardware_revisions"),
]


async def test_bad_fields_name_the_field(evota_sqlite):
    async with api_client(evota_sqlite) as api:
        await api.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
        for fields, field in BAD_FIELDS:
            form: dict[str, Any] = {"vendor": "Acme", "version": "1.0", "models": ["M1"]}
            form.update(fields)
            form = {k: v for k, v in form.items() if v is not None}
            r = await api.post("/api/v1/firmware", data=form, files={"file": ("f.bin", b"data")})
            problem(r, 422, field)
    assert blob_files(evota_sqlite) == [] and temp_files(evota_sqlite) == []


async def test_bad_bodies_get_problems_not_crashes(evota_sqlite):
    rt = evota_sqlite
    good = [("vendor", "Acme"), ("version", "1.0"), ("models", "M1")]
    async with api_client(rt) as api:
        await api.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})

        async def post(content: bytes, content_type: str | None = MULTIPART) -> Any:
            headers = {"content-type": content_type} if content_type else {}
            return await api.post("/api/v1/firmware", content=content, headers=headers)

        problem(await post(b"{}", "application/json"), 415, "Content-Type")
        problem(await post(b"x", None), 415, "Content-Type")
        problem(await post(body(good, b"x"), "multipart/form-data"), 415, "Content-Type")
        problem(await post(b"garbage without any boundary"), 400, "(body)")
        problem(await post(body(good, b"x")[:-8]), 400, "(body)")  # truncated
        problem(await post(body(good)), 422, "file")
        problem(await post(body(good, b"")), 422, "file")
        problem(
            await post(body([*good, ("release_notes", b"\xff\xfe")], b"x")), 422, "release_notes"
        )
        problem(await post(body([*good, ("version", "1.1")], b"x")), 422, "version")
        two_files = body(good, b"x").replace(f"--{BOUNDARY}--".encode(), b"") + body([], b"y")
        problem(await post(two_files), 422, "file")
        many = body([("models", "M")] * 300, b"x")
        problem(await post(many), 400, "(body)")
        problem(
            await post(body([*good, ("release_notes", "n" * 70_000)], b"x")), 422, "release_notes"
        )
        no_name = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        problem(await post(no_name.encode()), 400, "(body)")
        no_headers = f"--{BOUNDARY}\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        problem(await post(no_headers.encode()), 400, "(body)")
        # python-multipart refuses a preamble (no HTTP client sends one): a 400, not a crash.
        problem(await post(b"preamble\r\n" + body(good, b"x")), 400, "(body)")
        r = await post(body(good, b"ok") + b"\r\nepilogue")  # an epilogue is ignored
        assert r.status_code == 201, r.text
    assert len(blob_files(rt)) == 1 and temp_files(rt) == []


async def test_oversize_uploads_get_413_and_leave_nothing(tmp_path, sqlite_url):
    rt = await start_runtime(tmp_path, sqlite_url, firmware_max_bytes=64 * 1024)
    try:
        prefix = body([("vendor", "Acme"), ("version", "1"), ("models", "M")])
        prefix = prefix[: -len(BOUNDARY) - 6]  # drop the closing delimiter
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
            "\r\n\r\n"
        ).encode()

        async def chunked() -> AsyncIterator[bytes]:
            yield prefix + head
            for _ in range(40):  # 2.5 MiB against a 64 KiB limit, no Content-Length
                yield b"z" * 65536
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        async with api_client(rt) as api:
            r = await api.post(
                "/api/v1/firmware", content=chunked(), headers={"content-type": MULTIPART}
            )
            doc = problem(r, 413, "file")
            assert "65536" in doc["detail"]
        assert temp_files(rt) == [] and blob_files(rt) == []

        # A declared Content-Length over the limit is refused before the body is read.
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.http_port)
        writer.write(
            (
                "POST /api/v1/firmware HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Bearer test-admin-token-0123456789\r\n"
                f"Content-Type: {MULTIPART}\r\nContent-Length: 900000000\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status.startswith(b"HTTP/1.1 413"), status
    finally:
        await rt.stop()


async def test_large_upload_streams_in_bounded_memory(evota_sqlite):
    size = 20 * 1024 * 1024
    chunk = bytes(range(256)) * 1024  # 256 KiB
    digest = hashlib.sha256()
    for _ in range(size // len(chunk)):
        digest.update(chunk)
    head = body([("vendor", "Acme"), ("version", "9"), ("models", "M")])[: -len(BOUNDARY) - 6]
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    ).encode()

    async def stream() -> AsyncIterator[bytes]:
        yield head
        for _ in range(size // len(chunk)):
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async with api_client(evota_sqlite) as api:
        await api.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
        tracemalloc.start()
        try:
            r = await api.post(
                "/api/v1/firmware", content=stream(), headers={"content-type": MULTIPART}
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == digest.hexdigest() and r.json()["size"] == size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte upload"


# --- listing, showing, lifecycle ----------------------------------------------------------


async def test_list_filters_and_pagination(evota):
    async with api_client(evota) as api:
        for vendor in ("Acme", "Volt"):
            await api.put(f"/api/v1/firmware/vendors/{vendor}", json={"allow_unsigned": True})
        for i in range(5):
            r = await upload(api, f"acme {i}".encode(), version=f"1.{i}", models=["M1", "M2"])
            assert r.status_code == 201
        await upload(api, b"volt", vendor="Volt", version="1.0", models=["V1"])
        await upload(api, b"any", vendor="Volt", version="2.0", models=["V1"], state="released")
        page = (await api.get("/api/v1/firmware", params={"limit": 2, "offset": 1})).json()
        assert page["total"] == 7 and len(page["items"]) == 2
        page = (await api.get("/api/v1/firmware", params={"vendor": "acme"})).json()
        assert page["total"] == 5
        versions = [f["version"] for f in page["items"]]
        assert sorted(versions, reverse=True) == versions  # newest first
        page = (await api.get("/api/v1/firmware", params={"model": "V1"})).json()
        assert {f["version"] for f in page["items"]} == {"1.0", "2.0"}
        page = (await api.get("/api/v1/firmware", params={"model": "M2", "version": "1.3"})).json()
        assert [f["vendor"] for f in page["items"]] == ["Acme"]
        page = (await api.get("/api/v1/firmware", params={"state": "released"})).json()
        assert [f["version"] for f in page["items"]] == ["2.0"]
        problem(await api.get("/api/v1/firmware", params={"state": "gone"}), 422, "state")
        problem(await api.get("/api/v1/firmware", params={"limit": 0}), 422, "limit")
        problem(await api.get("/api/v1/firmware/not-an-id"), 404, "id")


async def test_lifecycle_transitions(evota):
    async with api_client(evota) as api:
        await api.put("/api/v1/firmware/vendors/Acme", json={"allow_unsigned": True})
        fw = (await upload(api, b"lifecycle")).json()
        url = f"/api/v1/firmware/{fw['id']}"

        async def to(state: str, **extra: Any) -> Any:
            return await api.post(f"{url}/state", json={"state": state, **extra})

        problem(await to("deprecated"), 409, "state")  # draft -> deprecated is not allowed
        assert (await to("pilot")).json()["state"] == "pilot"
        assert (await to("draft")).json()["state"] == "draft"
        r = await to("released", reason="pilot passed")
        assert r.json()["state"] == "released" and r.json()["state_reason"] == "pilot passed"
        problem(await to("pilot"), 409, "state")
        r = await api.post(f"{url}/deprecate", json={"reason": "2.0 is out"})
        assert r.json()["state"] == "deprecated"
        assert (await to("released")).json()["state"] == "released"
        assert (await api.post(f"{url}/deprecate")).json()["state"] == "deprecated"
        problem(await api.post(f"{url}/revoke", json={}), 422, "reason")
        # one path per action: revoking only through /revoke (it may need four eyes)
        assert "/revoke" in problem(await to("revoked", reason="x"), 422, "state")["detail"]
        r = await api.post(f"{url}/revoke", json={"reason": "bricks M1 units"})
        assert r.json()["state"] == "revoked" and r.json()["state_reason"] == "bricks M1 units"
        for state in ("draft", "pilot", "released", "deprecated"):
            doc = problem(await to(state), 409, "state")
            assert "no further transitions" in doc["detail"]
        problem(await to("gone"), 422, "state")
        problem(await api.post("/api/v1/firmware/nope/revoke", json={"reason": "x"}), 404, "id")
    # The runtime was told: the blob is no longer served.
    assert fw["sha256"] in evota._revoked_sha256


# --- trusted roots, auth ----------------------------------------------------------------------


def _expired_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old Root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_trusted_roots_crud_and_refusals(evota, keys):
    async with api_client(evota) as api:
        root = await trust(api, keys)
        der = x509.load_pem_x509_certificate(keys.ca_cert).public_bytes(serialization.Encoding.DER)
        assert root["fingerprint"] == hashlib.sha256(der).hexdigest()
        assert "Acme Root" in root["subject"] and root["vendor"] == "Acme"
        r = await api.post(
            "/api/v1/firmware/trusted-roots",
            json={"vendor": "acme", "certificate": keys.ca_cert.decode()},
        )
        problem(r, 409, "certificate")
        await trust(api, keys, vendor="Volt")  # the same CA may serve another vendor
        page = (await api.get("/api/v1/firmware/trusted-roots", params={"vendor": "ACME"})).json()
        assert [r["id"] for r in page["items"]] == [root["id"]]
        assert (await api.get("/api/v1/firmware/trusted-roots")).json()["total"] == 2
        for pem, words in (
            (keys.cert.decode(), "not a CA"),
            (_expired_ca().decode(), "expired"),
            ("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", "not a PEM"),
            ("x" * 6000, "over the limit"),
        ):
            r = await api.post(
                "/api/v1/firmware/trusted-roots", json={"vendor": "Acme", "certificate": pem}
            )
            assert words in problem(r, 422, "certificate")["detail"]
        r = await api.post("/api/v1/firmware/trusted-roots", json={"certificate": "x"})
        problem(r, 422, "vendor")
        r = await api.delete(f"/api/v1/firmware/trusted-roots/{root['id']}")
        assert r.status_code == 204
        r = await api.delete(f"/api/v1/firmware/trusted-roots/{root['id']}")
        problem(r, 404, "id")
        problem(await api.delete("/api/v1/firmware/trusted-roots/abc"), 422, "root_id")
        page = (await api.get("/api/v1/firmware/trusted-roots", params={"vendor": "Acme"})).json()
        assert page["total"] == 0


async def test_every_route_requires_a_token(evota_sqlite):
    async with api_client(evota_sqlite, token=None) as api:
        for method, path in (
            ("POST", "/api/v1/firmware"),
            ("GET", "/api/v1/firmware"),
            ("GET", "/api/v1/firmware/x"),
            ("POST", "/api/v1/firmware/x/state"),
            ("POST", "/api/v1/firmware/x/revoke"),
            ("GET", "/api/v1/firmware/vendors"),
            ("PUT", "/api/v1/firmware/vendors/Acme"),
            ("GET", "/api/v1/firmware/trusted-roots"),
            ("POST", "/api/v1/firmware/trusted-roots"),
            ("DELETE", "/api/v1/firmware/trusted-roots/1"),
        ):
            r = await api.request(method, path)
            problem(r, 401, "Authorization")
        r = await api.post(
            "/api/v1/firmware",
            data={"vendor": "A", "version": "1", "models": ["M"]},
            files={"file": ("f", b"data")},
        )
        problem(r, 401, "Authorization")
    assert blob_files(evota_sqlite) == []


async def test_openapi_documents_the_upload(evota_sqlite):
    async with api_client(evota_sqlite, token=None) as api:
        spec = (await api.get("/api/openapi.json")).json()
    upload_spec = spec["paths"]["/api/v1/firmware"]["post"]["requestBody"]["content"]
    assert "file" in upload_spec["multipart/form-data"]["schema"]["properties"]
    assert "/api/v1/firmware/trusted-roots/{root_id}" in spec["paths"]


# --- the multipart parser on its own ---------------------------------------------------------


def _events(raw: bytes, step: int) -> list[Any]:
    parser = MultipartParser(BOUNDARY.encode())
    events: list[Any] = []
    for i in range(0, len(raw), step):
        events.extend(parser.feed(raw[i : i + step]))
    parser.close()
    merged: list[Any] = []
    for e in events:
        if isinstance(e, bytes):
            if merged and merged[-1][0] == "data":
                merged[-1] = ("data", merged[-1][1] + e)
            else:
                merged.append(("data", e))
        elif isinstance(e, PartStart):
            merged.append(("start", e.name, e.filename))
        else:
            assert isinstance(e, PartEnd)
            merged.append(("end",))
    return merged


def test_parser_gives_the_same_parts_however_the_body_is_split():
    file = b"\r\n--evota-test-boundar\r\n--" * 50 + b"\r"  # boundary look-alikes inside
    raw = body([("vendor", "Acme"), ("notes", "")], file)
    expected = _events(raw, len(raw))
    assert expected == [
        ("start", "vendor", None),
        ("data", b"Acme"),
        ("end",),
        ("start", "notes", None),
        ("end",),
        ("start", "file", "a.bin"),
        ("data", file),
        ("end",),
    ]
    for step in (1, 2, 3, 7, 31, 64, 1000):
        assert _events(raw, step) == expected


def test_parser_headers_and_filenames():
    raw = (
        f"--{BOUNDARY}\r\n"
        'content-disposition: form-data; name="file"; filename="a.bin";'
        " filename*=UTF-8''%E2%82%AC%20fw.bin\r\n\r\nx\r\n"
        f"--{BOUNDARY}--"
    ).encode()
    assert _events(raw, 5)[0] == ("start", "file", "a.bin")  # filename* is not decoded
    with pytest.raises(MultipartError, match="closing boundary"):
        _events(raw[:-2], 5)
    with pytest.raises(MultipartError):
        _events(f"--{BOUNDARY}xx\r\n".encode(), 4)
    assert safe_filename("C:\\Users\\me\\fw.bin") == "fw.bin"
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..") is None and safe_filename(None) is None
    assert safe_filename(" a\x01\x7fb.bin ") == "a__b.bin"  # one rule for every upload
    assert safe_filename("x" * 300 + ".bin") == "x" * 255
