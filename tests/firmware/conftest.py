"""Fixtures of the firmware tests: the vendor's download site for imports and feeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firmware.vendor_site import Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A real HTTPS server on loopback with its own CA (see tests.firmware.vendor_site)."""
    s = Site(tmp_path / "site")
    yield s
    s.close()
