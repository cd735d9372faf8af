"""``evota playbook``: the shipped defaults, show → edit → apply, switches, runs, and one
clear line for every error."""

from __future__ import annotations

from pathlib import Path

from evota.playbooks import builtin, spec
from evota.runtime import Runtime
from tests.test_cli import _json, invoke


def test_every_default_parses_and_is_off() -> None:
    playbooks = builtin.playbooks()
    assert {p.name for p in playbooks} == {
        "stuck-connector",
        "offline-after-firmware",
        "repeated-boots",
    }
    assert all(not p.enabled and p.target == spec.Selector() for p in playbooks)
    stuck = next(p for p in playbooks if p.name == "stuck-connector")
    assert [s.command for s in stuck.steps] == ["unlock-connector", "reset", "reset", None]
    assert stuck.trigger.for_minutes == 10 and "GroundFailure" not in stuck.trigger.error_codes
    boots = next(p for p in playbooks if p.name == "repeated-boots")
    assert all(s.command is None for s in boots.steps)  # an alert, no action


async def test_defaults_show_edit_apply_and_switch(evota_sqlite: Runtime, tmp_path: Path) -> None:
    rt = evota_sqlite
    r = await invoke(rt, "playbook", "defaults")
    assert r.exit_code == 0, r.output
    assert "stuck-connector: installed (off)" in r.stdout
    r = await invoke(rt, "playbook", "defaults")  # a second time keeps what is there
    assert r.exit_code == 0 and r.stdout.count("kept") == 3, r.output

    r = await invoke(rt, "playbook", "list")
    assert r.exit_code == 0 and "repeated-boots" in r.stdout and "off" in r.stdout, r.output

    r = await invoke(rt, "playbook", "show", "stuck-connector")
    assert r.exit_code == 0, r.output
    document = tmp_path / "stuck.yaml"
    document.write_text(r.stdout[r.stdout.index("# stuck-connector") :])  # comments: YAML
    r = await invoke(rt, "playbook", "apply", str(document))
    assert r.exit_code == 0 and "unchanged stuck-connector v1" in r.stdout, r.output

    document.write_text(document.read_text().replace("for_minutes: 10", "for_minutes: 20"))
    r = await invoke(rt, "playbook", "apply", str(document))
    assert r.exit_code == 0 and "updated stuck-connector v2 (off)" in r.stdout, r.output

    r = await invoke(rt, "playbook", "enable", "stuck-connector")
    assert r.exit_code == 0 and "enabled stuck-connector v3 (on)" in r.stdout, r.output
    r = await invoke(rt, "playbook", "dry-run", "stuck-connector", "on", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["dry_run"] is True, r.output
    r = await invoke(rt, "playbook", "disable", "stuck-connector")
    assert r.exit_code == 0 and "(off)" in r.stdout, r.output
    r = await invoke(rt, "playbook", "runs", "--playbook", "stuck-connector", "--json")
    assert r.exit_code == 0 and _json(r.stdout)["total"] == 0, r.output
    r = await invoke(rt, "playbook", "kill-switch", "on")
    assert r.exit_code == 0 and "kill switch ON" in r.stdout and rt.playbooks.kill_switch, r.output
    r = await invoke(rt, "playbook", "kill-switch", "off")
    assert r.exit_code == 0 and not rt.playbooks.kill_switch, r.output
    r = await invoke(rt, "playbook", "kill-switch", "--json")
    assert _json(r.stdout) == {"kill_switch": False}, r.output
    r = await invoke(rt, "playbook", "delete", "repeated-boots")
    assert r.exit_code == 0, r.output
    r = await invoke(rt, "playbook", "list", "--json")
    assert [p["name"] for p in _json(r.stdout)["items"]] == [
        "offline-after-firmware",
        "stuck-connector",
    ]


async def test_errors_are_one_clear_line(evota_sqlite: Runtime, tmp_path: Path) -> None:
    rt = evota_sqlite
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: p\ntrigger: {kind: connector_faulted, for_minutes: 10}\n"
        "steps: [{command: reset, params: {type: Sideways}}]\n"
    )
    cases = [
        (("playbook", "apply", str(bad)), "steps[0].params.type"),
        (("playbook", "apply", str(tmp_path / "missing.yaml")), "missing.yaml"),
        (("playbook", "show", "nope"), "404"),
        (("playbook", "enable", "nope"), "404"),
        (("playbook", "dry-run", "nope", "maybe"), "on or off"),
        (("playbook", "kill-switch", "sideways"), "on or off"),
    ]
    for args, expected in cases:
        r = await invoke(rt, *args)
        assert r.exit_code == 1, (args, r.output)
        assert expected in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
    (tmp_path / "yaml.yaml").write_text("name: [unclosed")
    r = await invoke(rt, "playbook", "apply", str(tmp_path / "yaml.yaml"))
    assert r.exit_code == 1 and "not valid YAML" in r.output, r.output


def test_every_playbook_in_the_docs_parses() -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "playbooks.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        spec.parse_text(block)  # SpecError names the field of a recipe gone stale
