"""``evota firmware`` repository commands end to end against a running evota."""

from __future__ import annotations

import asyncio
import hashlib
import json

from typer.testing import CliRunner

from evota.cli import app
from tests.conftest import TOKEN

runner = CliRunner()


async def invoke(runtime, *args, token=TOKEN):
    env = {"EVOTA_URL": f"http://127.0.0.1:{runtime.http_port}", "EVOTA_TOKEN": token}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_sign_trust_add_and_lifecycle(evota_sqlite, tmp_path):
    rt = evota_sqlite
    keys = tmp_path / "keys"
    r = await invoke(rt, "firmware", "keygen", "--ca", "--cn", "Acme Root", "--org", "Acme",
                     "--out-dir", str(keys))  # fmt: skip
    assert r.exit_code == 0, r.output
    r = await invoke(rt, "firmware", "keygen", "--cn", "Acme Release", "--org", "Acme",
                     "--out-dir", str(keys), "--ca-key", str(keys / "ca.key.pem"),
                     "--ca-cert", str(keys / "ca.cert.pem"))  # fmt: skip
    assert r.exit_code == 0, r.output
    image = tmp_path / "acme-2.4.0.bin"
    image.write_bytes(b"firmware bytes " * 10_000)
    sig = tmp_path / "acme.sig"
    r = await invoke(rt, "firmware", "sign", str(image), "--key", str(keys / "signing.key.pem"),
                     "--out", str(sig))  # fmt: skip
    assert r.exit_code == 0, r.output

    r = await invoke(rt, "firmware", "trust", "add", "--vendor", "Acme", str(keys / "ca.cert.pem"))
    assert r.exit_code == 0 and "Acme Root" in r.stdout, r.output
    r = await invoke(rt, "firmware", "trust", "list", "--json")
    assert json.loads(r.stdout)["total"] == 1

    add = ["firmware", "add", str(image), "--version", "2.4.0", "--vendor", "Acme",
           "--model", "M1", "--model", "M2", "--hardware-revision", "r2",
           "--signature", str(sig), "--cert", str(keys / "signing.cert.pem"),
           "--notes", "Faster boot", "--json"]  # fmt: skip
    r = await invoke(rt, *add)
    assert r.exit_code == 0, r.output
    fw = json.loads(r.stdout)
    assert fw["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert fw["models"] == ["M1", "M2"] and fw["filename"] == "acme-2.4.0.bin" and fw["signed"]

    r = await invoke(rt, *add)
    assert r.exit_code == 1 and "409" in r.output and len(r.output.strip().splitlines()) == 1

    r = await invoke(rt, "firmware", "list", "--vendor", "acme", "--state", "draft")
    assert r.exit_code == 0 and "2.4.0" in r.stdout
    r = await invoke(rt, "firmware", "show", fw["id"])
    assert r.exit_code == 0 and "chargers_running:" in r.stdout and "Faster boot" in r.stdout
    r = await invoke(rt, "firmware", "release", fw["id"])
    assert r.exit_code == 0 and "released" in r.stdout
    r = await invoke(rt, "firmware", "deprecate", fw["id"], "--reason", "2.5 is out")
    assert r.exit_code == 0 and "deprecated (2.5 is out)" in r.stdout
    r = await invoke(rt, "firmware", "revoke", fw["id"])
    assert r.exit_code != 0 and "--reason" in r.output
    r = await invoke(rt, "firmware", "revoke", fw["id"], "--reason", "bricks M2", "--json")
    assert r.exit_code == 0, r.output
    # The in-process server logs the revocation to the same (captured) stdout first.
    assert json.loads(r.stdout[r.stdout.index("{\n") :])["state"] == "revoked"
    r = await invoke(rt, "firmware", "release", fw["id"])
    assert r.exit_code == 1 and "409" in r.output

    r = await invoke(rt, "firmware", "trust", "remove", "1")
    assert r.exit_code == 0
    r = await invoke(rt, "firmware", "trust", "list")
    assert "no trusted roots" in r.stdout


async def test_vendor_policy_and_unsigned_upload(evota_sqlite, tmp_path):
    rt = evota_sqlite
    image = tmp_path / "volt.bin"
    image.write_bytes(b"volt image")
    add = ["firmware", "add", str(image), "--version", "1.0", "--vendor", "Volt",
           "--model", "V1", "--state", "pilot"]  # fmt: skip
    r = await invoke(rt, *add)
    assert r.exit_code == 1 and "unsigned firmware is refused" in r.output
    r = await invoke(rt, "firmware", "vendor", "Volt")
    assert r.exit_code == 0 and "requires signed images" in r.stdout
    r = await invoke(rt, "firmware", "vendor", "Volt", "--allow-unsigned")
    assert r.exit_code == 0 and "accepts unsigned images" in r.stdout
    r = await invoke(rt, *add)
    assert r.exit_code == 0 and "pilot" in r.stdout and "unsigned" in r.stdout, r.output
    r = await invoke(rt, "firmware", "list", "--json", "--state", "pilot")
    assert json.loads(r.stdout)["total"] == 1
    r = await invoke(rt, "firmware", "vendor", "Volt", "--require-signed", "--json")
    assert json.loads(r.stdout)["allow_unsigned"] is False


async def test_errors_are_one_line(evota_sqlite, tmp_path):
    rt = evota_sqlite
    r = await invoke(rt, "firmware", "show", "no-such-id")
    assert r.exit_code == 1 and "404" in r.output
    r = await invoke(rt, "firmware", "add", str(tmp_path / "missing.bin"), "--version", "1",
                     "--vendor", "A", "--model", "M")  # fmt: skip
    assert r.exit_code == 1 and "cannot read firmware" in r.output
    r = await invoke(rt, "firmware", "list", token="wrong")
    assert r.exit_code == 1 and "401" in r.output
    pem = tmp_path / "junk.pem"
    pem.write_text("not a certificate")
    r = await invoke(rt, "firmware", "trust", "add", "--vendor", "A", str(pem))
    assert r.exit_code == 1 and "not a PEM" in r.output
    for result in (r,):
        assert len(result.output.strip().splitlines()) == 1
