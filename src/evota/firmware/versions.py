"""Firmware version ordering; the rules live in :mod:`evota.versions`.

The ordering moved to the shared bottom layer so that ``evota.fleet`` (vendor profiles with a
firmware range) can use it too: fleet and firmware are siblings that must not import each other.
"""

from evota.versions import VersionKey, compare, is_newer, sort_versions, version_key

__all__ = ["VersionKey", "compare", "is_newer", "sort_versions", "version_key"]
