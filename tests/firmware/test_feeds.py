"""Vendors' release feeds: the format (pure) and the checks that import new versions as
drafts, against the loopback HTTPS vendor site (tests.firmware.vendor_site)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from evota.firmware import signing
from evota.firmware.feed_format import MAX_RELEASES, FeedError, Release, new_releases, parse_feed
from evota.store.models import AuditEntry
from tests.conftest import Keys
from tests.firmware.test_firmware_cli import invoke
from tests.firmware.test_import import LOOPBACK, lab, nothing_stored
from tests.firmware.vendor_site import Site
from tests.support import until
from tests.test_firmware_update import MODEL, VENDOR, image_bytes

SHA = "ab" * 32


def entry(version: str = "1.0", **fields: Any) -> dict[str, Any]:
    return {"version": version, "url": f"https://x.example/{version}.bin", "sha256": SHA,
            "models": [MODEL], **fields}  # fmt: skip


# -- the format ------------------------------------------------------------------------------


def test_a_feed_is_read_with_its_defaults_and_each_version_once() -> None:
    doc = {
        "signing_certificate": "CERT",
        "releases": [
            entry("1.0", signature="QUJD", release_notes="first"),
            entry("1.1", signature="https://x.example/1.1.sig", signing_certificate="OWN"),
            entry("1.0", url="https://x.example/other.bin"),  # a repeat: the first wins
        ],
    }
    first, second = parse_feed(doc, VENDOR)
    assert (first.version, first.signature, first.signing_certificate) == ("1.0", "QUJD", "CERT")
    assert first.url == "https://x.example/1.0.bin" and first.release_notes == "first"
    assert (second.signature, second.signature_url) == (None, "https://x.example/1.1.sig")
    assert second.signing_certificate == "OWN"
    assert [r.version for r in parse_feed([entry("2.0")], VENDOR)] == ["2.0"]  # a bare list


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"releases": [entry(), entry("2", sha256="nothex")]}, "releases[1].sha256"),
        ({"releases": [entry(models=[])]}, "releases[0].models"),
        ({"releases": [entry(models=["x" * 51])]}, "releases[0].models[0]"),
        ({"releases": [entry(surprise=1)]}, "releases[0].surprise"),
        ({"releases": [entry(vendor="Other")]}, "releases[0].vendor"),
        ({"releases": [entry(version="")]}, "releases[0].version"),
        ({"releases": [{"version": "1", "sha256": SHA, "models": ["M"]}]}, "releases[0].url"),
        ({"releases": [entry(signature="A" * 901)]}, "releases[0].signature"),
        ({"releases": "nope"}, "releases"),
        ({"extra": 1, "releases": []}, "extra"),
        ([entry()] * (MAX_RELEASES + 1), "(feed)"),
        ("text", "(feed)"),
    ],
)
def test_a_malformed_feed_names_the_first_problem(doc: Any, field: str) -> None:
    with pytest.raises(FeedError) as caught:
        parse_feed(doc, VENDOR)
    assert caught.value.field == field


def test_new_releases_skip_known_and_refused_versions_and_are_bounded() -> None:
    releases = [Release(v, "https://x/a", SHA, ("M",)) for v in ("1", "2", "3", "4", "5")]
    refused = {"3": SHA, "4": "cd" * 32}  # 4 was refused for other bytes: try again
    chosen = new_releases(releases, {"1"}, refused, limit=2)
    assert [r.version for r in chosen] == ["2", "4"]
    assert [r.version for r in new_releases(releases, set(), {}, limit=10)] == list("12345")


# -- checks against a vendor site ------------------------------------------------------------


def _signed(tmp_path: Path, keys: Keys, version: str) -> tuple[bytes, str]:
    data = image_bytes(version, 4096)
    path = tmp_path / f"{version}.bin"
    path.write_bytes(data)
    return data, signing.sign_file(path, keys.key)


async def _audit(rt: Any, action: str) -> list[Any]:
    async with rt.engine.connect() as conn:
        rows = await conn.execute(select(AuditEntry).where(AuditEntry.action == action))
        return list(rows.all())


async def test_a_feed_check_imports_new_versions_as_verified_drafts(
    tmp_path: Path, database_url: str, keys: Keys, site: Site
) -> None:
    releases = []
    for version in ("2.0.0", "2.1.0", "2.2.0", "2.3.0", "2.4.0"):
        data, signature = _signed(tmp_path, keys, version)
        site.routes[f"/fw/{version}.bin"] = ("file", data)
        releases.append(
            {
                "version": version,
                "url": site.url(f"/fw/{version}.bin"),
                "models": [MODEL],
                "sha256": hashlib.sha256(data).hexdigest(),
                "signature": signature,
            }
        )
    # 2.2.0's signature is a detached DER file; 2.3.0 claims other bytes than it serves
    site.routes["/fw/2.2.0.sig"] = ("file", base64.b64decode(releases[2].pop("signature")))
    releases[2]["signature"] = site.url("/fw/2.2.0.sig")
    releases[3]["sha256"] = "0" * 64
    feed = {"signing_certificate": keys.cert.decode(), "releases": releases}
    site.routes["/feed.json"] = ("file", json.dumps(feed).encode())
    nets = {"firmware_import_allow_networks": LOOPBACK, "firmware_feed_max_new": 3}
    async with lab(tmp_path, database_url, site, keys, **nets) as x:
        # 2.0.0 is already in the repository (uploaded by hand): not imported again
        data, signature = _signed(tmp_path, keys, "2.0.0")
        r = await x.api.post(
            "/api/v1/firmware",
            data={
                "vendor": VENDOR,
                "version": "2.0.0",
                "models": MODEL,
                "signature": signature,
                "signing_certificate": keys.cert.decode(),
            },
            files={"file": ("fw.bin", data)},
        )
        assert r.status_code == 201, r.text
        r = await x.api.post(
            "/api/v1/firmware/feeds",
            json={"vendor": VENDOR, "url": site.url("/feed.json?key=s3cr3t")},
        )
        assert r.status_code == 201, r.text
        feed_id = r.json()["id"]
        assert r.json()["url"] == site.url("/feed.json")  # the query is not shown

        r = await x.api.post(f"/api/v1/firmware/feeds/{feed_id}/check")
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["releases"] == 5 and result["error"] is None
        assert [e["version"] for e in result["created"]] == ["2.1.0", "2.2.0"]
        assert [(e["version"], e["field"]) for e in result["refused"]] == [("2.3.0", "sha256")]
        for created in result["created"]:
            fw = (await x.api.get(f"/api/v1/firmware/{created['firmware_id']}")).json()
            assert fw["state"] == "draft" and fw["signed"]
            assert fw["source"]["fetched_by"] == f"feed:{feed_id}"

        r = await x.api.post(f"/api/v1/firmware/feeds/{feed_id}/check")  # bounded: the rest
        assert [e["version"] for e in r.json()["created"]] == ["2.4.0"]
        assert r.json()["refused"] == []  # 2.3.0 is remembered, not fetched again
        fetched = [s.path for s in site.seen]
        assert fetched.count("/fw/2.3.0.bin") == 1 and "/fw/2.0.0.bin" not in fetched

        r = await x.api.post(f"/api/v1/firmware/feeds/{feed_id}/check")
        assert r.json()["created"] == [] and r.json()["refused"] == []
        r = await x.api.post(f"/api/v1/firmware/feeds/{feed_id}/check", params={"retry": "true"})
        assert [e["version"] for e in r.json()["refused"]] == ["2.3.0"]

        page = (await x.api.get("/api/v1/firmware", params={"vendor": VENDOR})).json()
        assert sorted(i["version"] for i in page["items"]) == ["2.0.0", "2.1.0", "2.2.0", "2.4.0"]
        listed = (await x.api.get("/api/v1/firmware/feeds")).json()["items"]
        assert listed[0]["checked_at"] and listed[0]["last_result"]["releases"] == 5

        imports = await until(lambda: _audit(x.rt, "firmware.feed_import"), lambda es: len(es) >= 5)
        assert {e.actor for e in imports} == {f"feed:{feed_id}"}
        assert sorted(e.outcome for e in imports) == ["created"] * 3 + ["refused"] * 2
        everything = await _audit(x.rt, "firmware.feed_import") + await _audit(
            x.rt, "POST /api/v1/firmware/feeds"
        )
        assert all("s3cr3t" not in json.dumps(e.detail, default=str) for e in everything)

        r = await x.api.delete(f"/api/v1/firmware/feeds/{feed_id}")
        assert r.status_code == 204
        assert (await x.api.post(f"/api/v1/firmware/feeds/{feed_id}/check")).status_code == 404


async def test_an_unreadable_feed_is_reported_and_imports_nothing(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    site.routes["/big.json"] = ("file", b"[" + b" " * 4096 + b"]")
    site.routes["/bad.json"] = ("file", json.dumps([entry("1", sha256="x")]).encode())
    site.routes["/text"] = ("file", b"<html>not json</html>")
    nets = {"firmware_import_allow_networks": LOOPBACK, "firmware_feed_max_bytes": 1024}
    async with lab(tmp_path, sqlite_url, site, keys, **nets) as x:
        for url, field, text in [
            (site.url("/big.json"), "url", "1024 bytes"),
            (site.url("/bad.json"), "[0].sha256", "64 hex digits"),
            (site.url("/text"), "(feed)", "not JSON"),
            ("https://10.9.8.7/feed.json", "url", "private"),
        ]:
            r = await x.api.post("/api/v1/firmware/feeds", json={"vendor": VENDOR, "url": url})
            assert r.status_code == 201, r.text
            check = (await x.api.post(f"/api/v1/firmware/feeds/{r.json()['id']}/check")).json()
            assert check["error"]["field"] == field and text in check["error"]["detail"], check
            assert check["created"] == []
        nothing_stored(x.rt)
        r = await x.api.post(
            "/api/v1/firmware/feeds", json={"vendor": VENDOR, "url": site.url("/bad.json")}
        )
        assert r.status_code == 409 and r.json()["field"] == "url"
        r = await x.api.post(
            "/api/v1/firmware/feeds", json={"vendor": VENDOR, "url": "http://x.example/f.json"}
        )
        assert r.status_code == 422 and r.json()["field"] == "url"
        assert (await x.api.post("/api/v1/firmware/feeds/999/check")).status_code == 404


async def test_feeds_are_checked_periodically_and_from_the_cli(
    tmp_path: Path, sqlite_url: str, keys: Keys, site: Site
) -> None:
    data, signature = _signed(tmp_path, keys, "5.0.0")
    site.routes["/fw.bin"] = ("file", data)
    feed = [{"version": "5.0.0", "url": site.url("/fw.bin"), "models": [MODEL],
             "sha256": hashlib.sha256(data).hexdigest(), "signature": signature,
             "signing_certificate": keys.cert.decode()}]  # fmt: skip
    site.routes["/feed.json"] = ("file", json.dumps(feed).encode())
    settings = {
        "firmware_import_allow_networks": LOOPBACK,
        "firmware_feed_interval_hours": 0.5 / 3600,
    }
    async with lab(tmp_path, sqlite_url, site, keys, **settings) as x:
        r = await invoke(
            x.rt, "firmware", "feed", "add", site.url("/feed.json"), "--vendor", VENDOR
        )
        assert r.exit_code == 0 and "feed 1" in r.stdout, r.output

        async def versions() -> list[str]:
            page = (await x.api.get("/api/v1/firmware", params={"vendor": VENDOR})).json()
            return [i["version"] for i in page["items"]]

        assert await until(versions, lambda v: v == ["5.0.0"])  # the watcher found it
        r = await invoke(x.rt, "firmware", "feed", "list")
        assert r.exit_code == 0 and "1 releases" in r.stdout, r.output
        r = await invoke(x.rt, "firmware", "feed", "check", "1")
        assert r.exit_code == 0 and "0 imported" in r.stdout, r.output
        r = await invoke(x.rt, "firmware", "feed", "check", "7")
        assert r.exit_code == 1 and "404" in r.output
        r = await invoke(x.rt, "firmware", "feed", "remove", "1")
        assert r.exit_code == 0, r.output
        r = await invoke(x.rt, "firmware", "feed", "add", "http://x.example/f", "--vendor", VENDOR)
        assert r.exit_code == 1 and "plain http" in r.output
