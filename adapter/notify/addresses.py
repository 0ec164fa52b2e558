"""Where rest-hook notifications may go: only to public internet addresses, so that a
Subscription cannot make the gateway probe or call the network it runs in (OWASP "Server Side
Request Forgery Prevention Cheat Sheet"). An endpoint's host is resolved when the Subscription
is written and again by each delivery, which then connects to the very addresses it checked
(``adapter.notify.channels``): a name that resolves elsewhere between the check and the
connection (DNS rebinding) gains nothing. ``GATEWAY_NOTIFY_ALLOW_PRIVATE`` lifts the rule for
tests and receivers on the gateway's own network."""

from __future__ import annotations

import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Blocks Python's ``is_global`` still counts as global (IANA special-purpose registries,
# RFC 6890 and RFC 3879): deprecated IPv6 site-local, NAT64 local use (RFC 8215), and the
# 6to4 relay anycast (RFC 7526).
NOT_PUBLIC: Final = tuple(ipaddress.ip_network(n) for n in (
    "fec0::/10", "64:ff9b:1::/48", "192.88.99.0/24"))
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
REFUSED: Final = ("A rest-hook endpoint's host must resolve to public internet addresses only "
                  "(not loopback, private, link-local, multicast or reserved ones).")


class AddressRefused(Exception):
    """An endpoint's host does not resolve, or resolves to an address that is not public."""


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Return True for a globally routable unicast address (an IPv6 address that carries an
    IPv4 one is judged by the IPv4 address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None:
            return is_public(inner)
    if any(ip.version == net.version and ip in net for net in NOT_PUBLIC):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified
                                 or ip.is_loopback or ip.is_link_local or ip.is_private)


def resolve(host: str, port: int) -> list[tuple[int, str]]:
    """Return the (address family, address) pairs ``host`` resolves to, once, all of them
    public.

    :raises AddressRefused: it does not resolve, or one of its addresses is not public.
    """
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressRefused(f"host {host} does not resolve ({exc})") from exc
    pairs: list[tuple[int, str]] = []
    for family, _type, _proto, _name, sockaddr in found:
        address = str(sockaddr[0]).partition("%")[0]
        if not is_public(ipaddress.ip_address(address)):
            raise AddressRefused(f"host {host} resolves to {address}, not a public address")
        if (family, address) not in pairs:
            pairs.append((int(family), address))
    return pairs


def check_endpoint(url: str) -> None:
    """Check that a rest-hook endpoint's host resolves to public addresses only.

    :raises AddressRefused: it does not.
    """
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError as exc:
        raise AddressRefused(f"endpoint port is not a number ({exc})") from exc
    resolve(parts.hostname or "", port)
