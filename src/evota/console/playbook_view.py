"""What the console's playbook pages show beyond the API's answer: the playbook as the YAML
document an operator edits (and ``evota playbook apply`` takes), and a starting example."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["EXAMPLE", "document"]

_KEYS = ("name", "version", "enabled", "dry_run", "description", "trigger", "target", "steps")

EXAMPLE = """\
name: my-playbook
description: a connector stuck in Faulted; unlock it, then tell people
trigger:
  kind: connector_faulted
  error_codes: [ConnectorLockFailure]
  for_minutes: 10
target:
  sites: [my-site]
steps:
  - command: unlock-connector
    params: {connector_id: "{connector}"}
    wait: {until: connector_available, minutes: 5}
  - escalate: {alert: true, message: connector still faulted}
"""


def document(playbook: dict[str, Any]) -> str:
    """The playbook as YAML, with its current version (so a stale edit is refused, 409)."""
    data = {k: playbook[k] for k in (*_KEYS, "guards")}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
