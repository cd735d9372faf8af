"""docs/security.md names the tests behind each promise: every test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cited() -> list[tuple[str, str | None]]:
    """``(file, test name or None)`` for every ``tests/…py[::name]`` in the page; a bare
    ``::name`` after a cited file refers to the same file."""
    text = (ROOT / "docs" / "security.md").read_text()
    cited: list[tuple[str, str | None]] = []
    last: str | None = None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?(?:::(\w+))?/?`", text):
        path, name = match.group(1), match.group(2)
        if path is None and name is None:
            continue
        if path is not None:
            last = path
        assert last is not None, f"`::{name}` without a file before it"
        cited.append((last, name))
    return cited


def test_every_test_the_security_page_names_exists() -> None:
    cited = _cited()
    assert len(cited) > 30
    missing = []
    for path, name in cited:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {name}\(", file.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, missing
