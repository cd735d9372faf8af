"""Which URLs and addresses a firmware import may fetch from (SSRF rules), pure.

An import makes the server fetch a URL an operator typed, so without these rules it would
read the cloud's metadata service, the database's admin port or a router's web page for
them. Only ``https`` is fetched (``http`` only where a setting allows it); the host's
addresses are all checked, and every address that is not globally routable is refused:
private, loopback, link-local, unique-local, multicast, unspecified, reserved and shared
(CGNAT) ranges, IANA's other special-purpose blocks, Teredo tunnels, and IPv6 forms that
carry such an IPv4 address (IPv4-mapped, -compatible, 6to4, NAT64). Networks an operator
lists (labs, tests) are allowed anyway. The shell (:mod:`evota.firmware.importer`) resolves a
name once, asks :func:`pick_address`, and then connects to exactly the address checked here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit

__all__ = [
    "MAX_URL_CHARS",
    "Network",
    "PolicyError",
    "Target",
    "address_problem",
    "parse_networks",
    "pick_address",
    "record_url",
    "target",
]

MAX_URL_CHARS: Final = 2048

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_TEREDO: Final = ipaddress.IPv6Network("2001::/32")
# IANA's special-purpose registries, checked besides ``ipaddress``'s own flags: those differ
# between Python versions (3.11 calls 192.0.0.8 global), and no firmware server lives here.
_SPECIAL: Final[tuple[Network, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/127",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


class PolicyError(Exception):
    """A URL or address the import must not fetch; ``reason`` is one sentence for the user."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "scheme", "url" or "address"


@dataclass(frozen=True, slots=True)
class Target:
    """A URL split for a pinned connection: the name to verify and send, and where to go."""

    scheme: str
    host: str  # a DNS name (lower case) or an IP literal without brackets
    port: int
    path: str  # path and query, at least "/"
    ip_literal: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from a setting; ``ValueError`` names the bad entry."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (CIDR) or address") from None
    return tuple(networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (and reaches), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def _kind(address: Address) -> str | None:
    """Why an address is not a public unicast one, or None if it is."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.IPv6Network("fc00::/7"):
        return "unique-local"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    if any(address in net for net in _SPECIAL if net.version == address.version):
        return "special-purpose"
    return None


def address_problem(address: str | Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why an import must not connect to ``address`` (e.g. "loopback"), None if it may.

    An address inside an allowed network may always be fetched; otherwise the address, and
    the IPv4 address an IPv6 form embeds, must both be public unicast.
    """
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    candidates = [address] if embedded is None else [address, embedded]
    if any(c in net for c in candidates for net in allowed if c.version == net.version):
        return None
    if address in _TEREDO:
        return "a Teredo tunnel address"
    if embedded is not None:
        kind = _kind(embedded)
        if kind is not None:
            return f"{kind} (IPv4 {embedded} inside {address})"
        # The IPv6 wrapper itself (6to4, NAT64) is not "global" to ipaddress, but
        # what it reaches is the embedded public address.
        return None
    return _kind(address)


def pick_address(host: str, addresses: Sequence[str], allowed: Sequence[Network]) -> str:
    """The address to connect to: the first, once every address the name has is allowed.

    All must pass, not just the one used: a name that also points inside the network is
    someone's attempt to reach it, and a later connection might pick the other address.
    """
    if not addresses:
        raise PolicyError(f"{host} has no address", "address")
    for address in addresses:
        problem = address_problem(address, allowed)
        if problem is not None:
            shown = host if host == address else f"{host} resolves to {address}, which"
            raise PolicyError(
                f"{shown} is {problem}: imports fetch only from public addresses "
                "(see EVOTA_FIRMWARE_IMPORT_ALLOW_NETWORKS)",
                "address",
            )
    return addresses[0]


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_CHARS:
        raise PolicyError(f"the URL is longer than {MAX_URL_CHARS} characters", "url")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise PolicyError("the URL contains spaces or control characters", "url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise PolicyError(f"not a valid URL: {exc}", "url") from None
    return parts


def target(url: str, allow_http: bool) -> Target:
    """Split and check a URL: scheme, no credentials, a host; ``PolicyError`` otherwise."""
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise PolicyError(
            "plain http is refused: use https (or allow http with "
            "EVOTA_FIRMWARE_IMPORT_ALLOW_HTTP for a lab)",
            "scheme",
        )
    if scheme not in _DEFAULT_PORTS:
        raise PolicyError(
            f"only https URLs can be imported, not {scheme or 'no scheme'!r}", "scheme"
        )
    if parts.username is not None or parts.password is not None:
        raise PolicyError("credentials in the URL are not accepted", "url")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise PolicyError("the URL has no host", "url")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
        try:
            host.encode("ascii")
        except UnicodeEncodeError:
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise PolicyError("the URL's host is not a valid name", "url") from None
    if "%" in host:
        raise PolicyError("scoped IPv6 addresses are not accepted", "url")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    return Target(scheme, host, port, path, literal)


def record_url(url: str) -> str:
    """The URL as evota stores and shows it: without the query and fragment, which often
    carry a download token (a signed link), so a secret never lands in the database."""
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl()[:MAX_URL_CHARS]
