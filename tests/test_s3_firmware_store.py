"""evota with ``EVOTA_FIRMWARE_STORE=s3://...`` end to end against a real S3 API server on
loopback (moto's standalone server): an image uploaded through the API lands in the bucket
and a simulated charger downloads it, resuming with Range requests, from a node whose cache
was empty; a charger's diagnostics land in the bucket; an unreachable store answers 503
problems, never a crash."""

from __future__ import annotations

import asyncio
import ftplib
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from evota.backup import backup
from evota.files import load_key
from evota.firmware import ftp_delivery, tokens
from evota.firmware.delivery import download_path
from evota.sim.fleet import FaultProfile
from tests.s3_fixtures import Bucket, GatedS3, gated_s3  # noqa: F401

from .conftest import Keys, api_client, start_runtime
from .support import free_port, until
from .test_commands import CommandBench, control
from .test_firmware_update import FAST_JOBS, Bench, allow_unsigned, running, upload

MiB = 1024 * 1024


@pytest.fixture
async def s3_bench(tmp_path: Path, sqlite_url: str, keys: Keys, s3: Bucket) -> AsyncIterator[Bench]:
    async with running(Bench, tmp_path, sqlite_url, keys, **s3.settings()) as b:
        yield b


async def test_an_uploaded_image_lands_in_s3_and_a_charger_resumes_its_download(
    s3_bench: Bench, s3: Bucket
) -> None:
    b = s3_bench
    fw = await upload(b.api, b.tmp_path, b.keys, "2.0.0", size=2 * MiB)  # signed
    assert s3.keys() == [f"evota/firmware/sha256/{fw['sha256']}"]
    assert hashlib.sha256(s3.get(s3.keys()[0])).hexdigest() == fw["sha256"]
    assert not (b.rt.settings.data_dir / "firmware").exists()  # nothing on the local disk
    cache = b.rt.firmware_cache
    assert cache is not None and cache.cached() == set()  # this node has no copy yet
    charger = await b.charger(faults=FaultProfile(link_drop=1.0))
    job = await b.finished((await b.update(charger.identity, fw["id"])).json()["job_id"])
    assert job["state"] == "succeeded", job
    job = await until(lambda: b.job(job["id"]), lambda j: j["bytes_served"] >= fw["size"])
    assert fw["size"] <= job["bytes_served"] < 2 * fw["size"]  # resumed, not restarted
    assert cache.cached() == {fw["sha256"]} and cache.fetches == 1  # fetched once

    # a backup leaves the cache out: the bucket holds the images (docs/cluster.md)
    out = b.tmp_path / "backup"
    await asyncio.to_thread(
        backup, b.rt.settings.data_dir, b.rt.settings.resolved_database_url(), out
    )
    assert (out / tokens.KEY_FILE).is_file() and not (out / "firmware-cache").exists()


async def test_a_refused_upload_leaves_no_object_in_the_bucket(s3_bench: Bench, s3: Bucket) -> None:
    b = s3_bench
    path = b.tmp_path / "unsigned.bin"
    path.write_bytes(b"EVOTA-SIM-FIRMWARE 9.9.9\n" + b"x" * 1000)
    with path.open("rb") as f:
        r = await b.api.post(
            "/api/v1/firmware",
            data={"vendor": "Evota", "version": "9.9.9", "models": ["Sim-AC22"]},
            files={"file": (path.name, f)},
        )
    assert r.status_code == 422 and r.json()["field"] == "signature", r.text
    assert s3.keys() == [] and s3.unfinished_uploads() == []


@pytest.fixture
async def s3_commands(
    tmp_path: Path, sqlite_url: str, keys: Keys, s3: Bucket
) -> AsyncIterator[CommandBench]:
    async with running(
        CommandBench, tmp_path, sqlite_url, keys, call_timeout=3.0, **s3.settings()
    ) as b:
        yield b


async def test_a_chargers_diagnostics_land_in_the_bucket(
    s3_commands: CommandBench, s3: Bucket
) -> None:
    b = s3_commands
    sim = await b.sim()
    answer = await b.ok(sim.identity, "get-diagnostics", start="2026-01-01T00:00:00Z")
    assert answer["status"] == "Accepted"
    await until(
        lambda: b.events(sim.identity, "diagnostics_status"),
        lambda e: e == ["Uploading", "Uploaded"],
    )
    [sent] = control(sim).uploads
    [item] = (await b.api.get(f"/api/v1/chargers/{sim.identity}/files")).json()["items"]
    key = f"evota/uploads/{item['id'].replace('-', '')}"
    assert s3.keys() == [key]
    assert hashlib.sha256(s3.get(key)).hexdigest() == sent.sha256 == item["sha256"]
    assert not any((b.rt.settings.data_dir / "uploads").glob("*"))
    r = await b.api.get(f"/api/v1/files/{item['id']}")
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == sent.sha256
    assert r.headers["x-content-sha256"] == sent.sha256
    assert r.headers["content-disposition"].startswith("attachment;")


async def test_an_unreachable_store_answers_503_problems_and_evota_keeps_running(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = await start_runtime(
        tmp_path,
        sqlite_url,
        **FAST_JOBS,
        ftp_port=0,
        firmware_store="s3://evota-down/fw",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        s3_access_key_id="key",
        s3_secret_access_key="secret",
    )
    api = api_client(rt)
    try:
        r = await api.post(
            "/api/v1/firmware",
            data={"vendor": "Evota", "version": "1.0.0", "models": ["M"]},
            files={"file": ("fw.bin", b"EVOTA" * 1000)},
        )
        assert r.status_code == 503, r.text
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert problem["field"] == "file" and "firmware store unavailable" in problem["detail"]
        assert r.headers["retry-after"] == "30"

        # a charger with a valid download URL is told to come back later
        sha256 = "ab" * 32
        key = load_key(rt.settings.data_dir / tokens.KEY_FILE)
        grant = tokens.DownloadGrant("1", "CP-1", sha256, int(time.time()) + 600)
        path = download_path("CP-1", sha256, tokens.issue(grant, key))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.download_port}") as dl:
            got = await dl.get(path, headers={"Range": "bytes=100-"})
        assert got.status_code == 503 and got.headers["retry-after"] == "30"
        assert "firmware store unavailable" in got.json()["detail"]

        # over FTP too: a 421 to come back later, not a 530 counted as a failed login
        assert rt.ftp is not None and rt.ftp.port is not None
        ftp = ftplib.FTP()
        await asyncio.to_thread(ftp.connect, "127.0.0.1", rt.ftp.port, timeout=30)
        with pytest.raises(ftplib.error_temp) as later:
            await asyncio.to_thread(ftp.login, "CP-1", tokens.issue(grant, key))
        ftp.close()
        assert str(later.value).startswith("421 firmware store unavailable")
        assert str(later.value).endswith("try again later.")
        assert not rt.ftp.failures.blocked("127.0.0.1") and not rt.ftp.failures._seen

        # a charger's diagnostics upload is told the same
        url = rt.uploads.url("CP-1", "diagnostics")
        async with httpx.AsyncClient() as charger:
            put = await charger.put(f"{url}/diag.txt", content=b"log line\n" * 100)
        assert put.status_code == 503 and put.json()["field"] == "file"

        assert (await api.get("/healthz")).status_code == 200  # still serving
        assert (await api.get("/api/v1/firmware")).status_code == 200
    finally:
        await api.aclose()
        await rt.stop()


async def test_an_ftp_cache_fill_does_not_stall_the_nodes_other_ftp_sessions(
    tmp_path: Path,
    sqlite_url: str,
    gated_s3: GatedS3,  # noqa: F811
) -> None:
    """A charger's login over FTP on a cold cache fetches the image from the bucket; that
    fetch (held at the proxy) runs off pyftpdlib's one IO thread, so another charger's
    session on the same node is answered meanwhile, and the first gets its image after."""
    rt = await start_runtime(tmp_path, sqlite_url, ftp_port=0, **gated_s3.settings())
    api = api_client(rt)
    try:
        await allow_unsigned(api)
        fw = await upload(api, tmp_path, None, "4.0.0", size=MiB)
        assert rt.ftp is not None and rt.ftp.port is not None
        port = rt.ftp.port
        key = load_key(rt.settings.data_dir / tokens.KEY_FILE)
        grant = tokens.DownloadGrant("job-1", "CP-1", fw["sha256"], int(time.time()) + 600)
        fetch = gated_s3.hold("GET", f"firmware/sha256/{fw['sha256']}")

        def first() -> bytes:  # a charger whose login fills the cache
            with ftplib.FTP() as ftp:
                ftp.connect("127.0.0.1", port, timeout=10)
                ftp.login("CP-1", tokens.issue(grant, key))
                out = bytearray()
                ftp.retrbinary(f"RETR {ftp_delivery.FILE_NAME}", out.extend)
                return bytes(out)

        def second() -> list[str]:  # another charger's session meanwhile
            with ftplib.FTP() as ftp:
                replies = [ftp.connect("127.0.0.1", port, timeout=5)]
                replies.append(ftp.sendcmd("NOOP"))
                with pytest.raises(ftplib.error_perm) as refused:  # a login checked at once
                    ftp.login("CP-2", "not-a-token")
                replies.append(str(refused.value))
                return replies

        downloading = asyncio.create_task(asyncio.to_thread(first))
        try:
            assert await asyncio.to_thread(fetch.arrived.wait, 10), "no fetch reached S3"
            replies = await asyncio.to_thread(second)
            assert not downloading.done()  # still waiting on its fill
        finally:
            fetch.release.set()
        assert [r[:3] for r in replies] == ["220", "200", "530"]
        body = await downloading
        assert hashlib.sha256(body).hexdigest() == fw["sha256"]
        assert rt.firmware_cache is not None and rt.firmware_cache.fetches == 1
    finally:
        await api.aclose()
        await rt.stop()
