"""The import's SSRF rules, pure: which URLs and addresses may be fetched (properties)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evota.firmware.import_policy import (
    PolicyError,
    address_problem,
    parse_networks,
    pick_address,
    record_url,
    target,
)

# Every IPv4 range an import must never reach on its own.
FORBIDDEN_V4 = [
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
    "255.255.255.255/32",
]
FORBIDDEN_V6 = ["::1/128", "::/128", "fe80::/10", "fc00::/7", "ff00::/8", "fec0::/10"]


def in_network(cidr: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(cidr)
    return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])


forbidden_v4 = st.one_of([in_network(c) for c in FORBIDDEN_V4])
forbidden_v6 = st.one_of([in_network(c) for c in FORBIDDEN_V6])
_FORBIDDEN_NETS = [ipaddress.ip_network(c) for c in FORBIDDEN_V4]
public_v4 = st.ip_addresses(v=4).filter(lambda a: not any(a in n for n in _FORBIDDEN_NETS))


@given(forbidden_v4)
def test_every_non_public_ipv4_address_is_refused(address: ipaddress.IPv4Address) -> None:
    assert address_problem(address) is not None
    assert address_problem(str(address)) is not None


@given(forbidden_v6)
def test_loopback_link_local_unique_local_multicast_ipv6_are_refused(
    address: ipaddress.IPv6Address,
) -> None:
    assert address_problem(address) is not None


@given(forbidden_v4)
def test_ipv6_forms_of_a_forbidden_ipv4_address_are_refused(address: ipaddress.IPv4Address):
    value = int(address)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # IPv4-mapped ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),  # 6to4 2002:aabb:ccdd::
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value),  # NAT64
    ]
    if value > 1:
        forms.append(ipaddress.IPv6Address(value))  # IPv4-compatible ::a.b.c.d
    for form in forms:
        problem = address_problem(form)
        assert problem is not None, form
        assert problem == address_problem(str(form))


@given(public_v4)
def test_public_ipv4_addresses_and_their_mapped_form_are_allowed(address: ipaddress.IPv4Address):
    assert address_problem(address) is None
    assert address_problem(ipaddress.IPv6Address((0xFFFF << 32) | int(address))) is None


@given(st.one_of(forbidden_v4, forbidden_v6))
def test_an_allowed_network_opens_exactly_its_addresses(address) -> None:
    prefix = 24 if address.version == 4 else 120
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    allowed = parse_networks([str(network)])
    assert address_problem(address, allowed) is None
    for outside in (int(network[0]) - 1, int(network[-1]) + 1):
        if 0 <= outside < 2 ** (32 if address.version == 4 else 128):
            other = ipaddress.ip_address(outside)
            assert address_problem(other, allowed) == address_problem(other)


@given(public_v4, forbidden_v4)
def test_a_name_is_refused_when_any_of_its_addresses_is_forbidden(good, bad) -> None:
    for order in ([str(good), str(bad)], [str(bad), str(good)]):
        with pytest.raises(PolicyError) as caught:
            pick_address("fw.vendor.example", order, ())
        assert caught.value.kind == "address" and str(bad) in caught.value.reason
    assert pick_address("fw.vendor.example", [str(good)], ()) == str(good)


def test_scheme_credentials_and_shape() -> None:
    with pytest.raises(PolicyError, match="plain http is refused") as caught:
        target("http://fw.vendor.example/a.bin", allow_http=False)
    assert caught.value.kind == "scheme"
    assert target("http://fw.vendor.example/a.bin", allow_http=True).port == 80
    for url, kind in [
        ("ftp://fw.vendor.example/a.bin", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://user:pw@fw.vendor.example/a.bin", "url"),
        ("https:///a.bin", "url"),
        ("https://fw.vendor.example:99999/a.bin", "url"),
        ("https://fw.vendor.example/a b.bin", "url"),
        ("https://[fe80::1%25eth0]/a.bin", "url"),
        ("https://x.example/" + "a" * 2100, "url"),
    ]:
        with pytest.raises(PolicyError) as caught:
            target(url, allow_http=True)
        assert caught.value.kind == kind, url
    t = target("https://FW.Vendor.Example.:8443/fw/a.bin?sig=1", allow_http=False)
    assert (t.host, t.port, t.path, t.ip_literal) == (
        "fw.vendor.example",
        8443,
        "/fw/a.bin?sig=1",
        False,
    )
    assert t.host_header == "fw.vendor.example:8443"
    assert target("https://[2606:4700::1]/a", allow_http=False).host_header == "[2606:4700::1]"


def test_the_recorded_url_drops_query_and_fragment() -> None:
    assert (
        record_url("https://x.example/a.bin?X-Amz-Signature=s3cr3t#f") == "https://x.example/a.bin"
    )


def test_networks_setting_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks(["127.0.0.0/8", "10.0.0.0/33"])
