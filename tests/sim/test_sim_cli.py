"""``evota sim`` as a user runs it: flags, fleet files, provisioning, errors, Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer
from typer.testing import CliRunner

from evota.sim.cli import sim_command
from tests.pki_fixtures import Pki

from .conftest import SEED, csms_in_thread, server_tls

app = typer.Typer()
app.command()(sim_command)


@pytest.fixture(autouse=True)
def keep_logging_config() -> Iterator[None]:
    """sim_command configures logging for its process; do not leak that into other tests."""
    saved = structlog.get_config()
    level = logging.getLogger().level
    yield
    structlog.configure(**saved)
    logging.getLogger().setLevel(level)


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env or {"EVOTA_TOKEN": "", "EVOTA_URL": ""})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count: must be 1-100000"),
        (["--connectors", "0"], "--connectors"),
        (["--vendor", "A-vendor-name-much-too-long"], "--vendor: must be at most 20"),
        (["--url", "http://127.0.0.1:9000/ocpp"], "--url must start with ws://"),
        (["--speed", "0"], "--speed/--session-rate: speed must be positive"),
        (["--log-level", "loud"], "--log-level must be"),
        (["--provision"], "--provision needs --token"),
        (["--fleet", "/nonexistent/fleet.yaml"], "cannot read the file"),
        (["--fleet", "FLEET", "--count", "3"], "--count cannot be combined with --fleet"),
        (["--fleet", "BAD"], "line 3, groups[0].count: must be a whole number"),
        (["--fleet", "FLEET", "--ca", "x.pem"], "--ca cannot be combined with --fleet"),
        (["--ca", "/nonexistent/ca.pem"], "--ca: cannot read '/nonexistent/ca.pem'"),
        (["--client-cert", "PKI/good.pem"], "--client-cert and --client-key go together"),
        (
            ["--client-cert", "PKI/good.pem", "--client-key", "PKI/good.pem"],
            "--client-cert: the client key is not an unencrypted PEM",
        ),
        (
            ["--client-cert", "PKI/good.pem", "--client-key", "PKI/good.key"],
            "--client-cert is one charger's certificate: use --count 1",
        ),
        (["--security-profile", "3"], "--security-profile 3 needs --client-cert"),
        (["--security-profile", "0"], "--security-profile: must be 1, 2 or 3"),
        (["--fault", "expired_certificate=1"], "--fault expired_certificate needs --client-ca"),
        (["--tls-url", "ws://127.0.0.1:9000/ocpp"], "--tls-url must start with wss://"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(
    tmp_path: Path, args: list[str], message: str, pki: Pki
) -> None:
    good = tmp_path / "fleet.yaml"
    good.write_text("groups: [{prefix: A, count: 1}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - prefix: A\n    count: many\n")
    args = [str(good) if a == "FLEET" else str(bad) if a == "BAD" else a for a in args]
    args = [a.replace("PKI", str(pki.directory)) for a in args]
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("evota sim: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_runs_a_flag_fleet_and_prints_the_summary() -> None:
    with csms_in_thread() as csms:
        result = run(
            "--url", csms.url, "--count", "3", "--seed", SEED, "--prefix", "CLI-",
            "--duration", "1.2", "--refresh", "0.2", "--ramp-up", "0", "--speed", "60",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3/3 connected, 3 accepted" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("stopped after 1s")
    assert csms.ever_connected == {"CLI-0001", "CLI-0002", "CLI-0003"}


def test_runs_profile_3_chargers_with_minted_certificates(pki: Pki) -> None:
    tls = server_tls(pki.server.cert_path, pki.server.key_path, pki.charger_ca)
    with csms_in_thread(tls=tls) as csms:
        result = run(
            "--url", csms.url, "--count", "2", "--seed", SEED, "--prefix", "TLS-",
            "--ca", str(pki.server_ca), "--client-ca", str(pki.charger_ca),
            "--client-ca-key", str(pki.charger_ca_key), "--organization", pki.cpo,
            "--duration", "1.2", "--refresh", "0.2", "--ramp-up", "0", "--speed", "60",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2/2 connected, 2 accepted" in result.stdout
    assert sorted(cn or "" for _, cn, _ in csms.peers) == ["TLS-0001", "TLS-0002"]


def test_shows_a_live_table_on_a_terminal() -> None:
    with csms_in_thread() as csms:
        result = run(
            "--url", csms.url, "--count", "2", "--seed", SEED, "--duration", "0.6",
            "--refresh", "0.1", "--ramp-up", "0",
            env={"FORCE_COLOR": "1", "COLUMNS": "160", "EVOTA_TOKEN": "", "EVOTA_URL": ""},
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "evota sim — 2 chargers" in result.stdout and "accepted" in result.stdout
    assert "stopped after" in result.stdout


def test_runs_a_fleet_file_and_provisions_it_first(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"seed: {SEED}\nsites: [{{id: s1, name: S1}}]\n"
        "groups: [{prefix: F-, count: 2, site: s1, vendor: Acme}]\n"
    )
    posted: list[tuple[str, str, dict[str, Any]]] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posted.append((self.path, self.headers["Authorization"], body))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        with csms_in_thread() as csms:
            env = {"EVOTA_TOKEN": "sekrit", "EVOTA_URL": f"http://127.0.0.1:{api.server_port}"}
            result = run(
                "--url", csms.url, "--fleet", str(fleet), "--provision",
                "--duration", "0.8", "--refresh", "0.2", "--ramp-up", "0", env=env,
            )  # fmt: skip
    finally:
        api.shutdown()
    assert result.exit_code == 0, result.output
    assert "provisioned: 3 created" in result.stdout
    assert [(p, a) for p, a, _ in posted] == [("/api/v1/sites", "Bearer sekrit")] + [
        ("/api/v1/chargers", "Bearer sekrit")
    ] * 2
    assert {b["id"] for _, _, b in posted[1:]} == {"F-0001", "F-0002"}
    assert [p["chargePointVendor"] for p in csms.payloads("BootNotification")] == ["Acme"] * 2


def test_ctrl_c_stops_cleanly() -> None:
    with csms_in_thread() as csms:
        proc = subprocess.Popen(
            [
                sys.executable, "-c",
                "import typer; from evota.sim.cli import sim_command; typer.run(sim_command)",
                "--url", csms.url, "--count", "2", "--seed", SEED, "--refresh", "0.1",
                "--ramp-up", "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
            if "2 accepted" in lines[-1]:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, "".join(lines) + out
        assert "stopped after" in out and "Traceback" not in out
        time.sleep(0.2)
        assert not csms.links  # the chargers closed their connections
