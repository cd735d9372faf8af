"""Order vendor firmware version strings, so campaigns can tell upgrades from downgrades.

Chargers report whatever their vendor prints, so every string gets one sortable key and
``compare`` is ``cmp(version_key(a), version_key(b))``.  One key for everything is what keeps
the order total and transitive even when semantic and free-form versions are mixed.

Rules:

* Surrounding whitespace is ignored, and so is a leading ``v``/``V`` before a digit.
* Semantic versions -- ``MAJOR.MINOR.PATCH`` plus optional further numeric parts, an optional
  ``-pre.release`` and an optional ``+build`` -- follow SemVer 2.0.0 precedence: a pre-release
  sorts before its release (``1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0-rc.1 < 1.0.0``),
  numeric identifiers compare as numbers and below alphanumeric ones (ASCII order), fewer
  identifiers sort first, and build metadata is ignored (``1.0.0+a == 1.0.0+b``).
* Anything else uses natural ordering: runs of digits compare numerically (leading zeros
  ignored), runs of other characters compare case-insensitively, and at a position where one
  string has a number and the other text, the number sorts first; a string that is a prefix of
  another sorts first (``R12B3 < R12B10``, ``FW_2023.11_b5 < FW_2023.11_b12``).
* A semantic version is tokenised the same way as a free-form one (its release numbers joined
  by ``.``), so mixed comparisons are natural ordering; the only differences are that the
  pre-release marker sorts before the end of the string and build metadata is dropped.  This
  can disagree with plain natural ordering of the raw text, but it keeps the order transitive.
* For purely numeric versions (``1.2``, ``4.0.7.12``, semantic releases) trailing ``.0`` parts
  equal missing ones: ``1.2 == 1.2.0``.
* ``compare`` returns 0 for equivalent spellings (``R12b3`` vs ``r12B03``);
  ``sort_versions`` breaks those ties by the raw string so its output never depends on input
  order.

Nothing here raises on a ``str``, however odd; non-``str`` input is a ``ValueError``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["VersionKey", "compare", "is_newer", "sort_versions", "version_key"]

# Element kinds, in sort order.  _PRE < _END is what puts 1.0.0-rc before 1.0.0.
_PRE = 0
_END = 1
_NUM = 2
_TEXT = 3

Element = tuple[int, int, str]
VersionKey = tuple[Element, ...]

_IDENT = r"[0-9A-Za-z-]+"
_DOTTED_IDENTS = rf"{_IDENT}(?:\.{_IDENT})*"
_SEMVER = re.compile(
    rf"(?P<release>[0-9]+(?:\.[0-9]+){{2,}})"
    rf"(?:-(?P<pre>{_DOTTED_IDENTS}))?"
    rf"(?:\+{_DOTTED_IDENTS})?"
)
_NUMERIC = re.compile(r"[0-9]+(?:\.[0-9]+)*")
# ASCII digits only: str.isdigit() accepts characters such as "²" that int() rejects.
_RUN = re.compile(r"[0-9]+|[^0-9]+")
_LEADING_V = re.compile(r"[vV](?=[0-9])")

_END_ELEMENT: Element = (_END, 0, "")
_PRE_ELEMENT: Element = (_PRE, 0, "")
_DOT: Element = (_TEXT, 0, ".")


def _num(digits: str) -> Element:
    """Compare digit runs by (length, digits) without int(), which caps at 4300 digits."""
    stripped = digits.lstrip("0") or "0"
    return (_NUM, len(stripped), stripped)


def _release(release: str) -> list[Element]:
    """Dotted numbers with trailing zero parts dropped, so 1.2 and 1.2.0 get the same key."""
    parts = release.split(".")
    while len(parts) > 1 and not parts[-1].strip("0"):
        parts.pop()
    elements: list[Element] = []
    for part in parts:
        if elements:
            elements.append(_DOT)
        elements.append(_num(part))
    return elements


def _check(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    return value


@functools.lru_cache(maxsize=4096)
def _key(version: str) -> VersionKey:
    text = _LEADING_V.sub("", version.strip(), count=1)
    semver = _SEMVER.fullmatch(text)
    if semver is not None:
        elements = _release(semver["release"])
        pre = semver["pre"]
        if pre is not None:
            elements.append(_PRE_ELEMENT)
            for ident in pre.split("."):
                # SemVer: numeric identifiers compare as numbers, below alphanumeric ones,
                # which compare in ASCII order (case-sensitive).
                elements.append(
                    _num(ident) if ident.isascii() and ident.isdigit() else (_TEXT, 0, ident)
                )
    elif _NUMERIC.fullmatch(text):
        elements = _release(text)
    else:
        elements = [
            _num(run) if run[0] in "0123456789" else (_TEXT, 0, run.casefold())
            for run in _RUN.findall(text)
        ]
    elements.append(_END_ELEMENT)
    return tuple(elements)


def version_key(version: str) -> VersionKey:
    """A sort key for ``version``; equal keys mean equivalent versions (see module docstring)."""
    return _key(_check(version, "version"))


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, equivalent to or newer than ``b``."""
    key_a, key_b = version_key(a), version_key(b)
    return (key_a > key_b) - (key_a < key_b)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Oldest first; equivalent spellings are ordered by raw string so the result is stable."""
    items = [_check(v, "version") for v in versions]
    return sorted(items, key=lambda v: (_key(v), v))


def _superseded_by(
    supersedes: Mapping[str, Sequence[str]],
) -> dict[VersionKey, set[VersionKey]]:
    """The supersedes graph, with versions matched by equivalence rather than exact spelling."""
    graph: dict[VersionKey, set[VersionKey]] = {}
    for newer, older in supersedes.items():
        if isinstance(older, str):
            # A bare str is a Sequence[str] of characters: almost certainly a missing [...].
            raise ValueError(f"supersedes[{newer!r}] must be a sequence of versions, not a str")
        targets = graph.setdefault(version_key(newer), set())
        targets.update(version_key(_check(v, f"supersedes[{newer!r}] item")) for v in older)
    return graph


def _reaches(graph: dict[VersionKey, set[VersionKey]], start: VersionKey, goal: VersionKey) -> bool:
    seen = {start}
    stack = [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def is_newer(
    candidate: str,
    current: str,
    *,
    supersedes: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Whether installing ``candidate`` over ``current`` is an upgrade.

    ``supersedes`` maps a version to the versions it replaces, followed transitively; it
    exists for vendors whose strings do not sort (e.g. a renamed branch), so where it links
    the two versions it wins over the ordering.  If it links them both ways (a cycle) it says
    nothing and the ordering decides.  Equivalent versions are never newer than each other.
    """
    key_candidate = version_key(candidate)
    key_current = version_key(current)
    if key_candidate == key_current:
        return False
    if supersedes:
        graph = _superseded_by(supersedes)
        up = _reaches(graph, key_candidate, key_current)
        down = _reaches(graph, key_current, key_candidate)
        if up != down:
            return up
    return key_candidate > key_current
