"""The playbooks evota ships (``defaults/*.yaml``, packaged): off until an operator installs
and enables them (``evota playbook defaults``, docs/playbooks.md "Cookbook")."""

from __future__ import annotations

from importlib import resources

from evota.playbooks import spec

__all__ = ["documents", "playbooks"]


def documents() -> dict[str, str]:
    """Each default playbook's YAML document by its file name (``stuck-connector.yaml``)."""
    folder = resources.files("evota.playbooks").joinpath("defaults")
    return {
        f.name: f.read_text(encoding="utf-8")
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".yaml")
    }


def playbooks() -> list[spec.Playbook]:
    """The defaults, parsed (a test keeps every one valid)."""
    return [spec.parse_text(text) for text in documents().values()]
