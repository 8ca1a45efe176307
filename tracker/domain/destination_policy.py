"""Where action hooks may deliver: public addresses only, unless the operator allows more.

A hook's owner chooses where the forwarder connects, from inside our network, so
a destination must not reach what only we can reach: loopback (Redis, Postgres),
private and unique-local networks, link-local (the cloud metadata service at
169.254.169.254), multicast, reserved ranges, and the metadata service's names.
TRACKER_HOOKS_ALLOWED_DESTINATIONS opens CIDRs and host names for internal receivers.

Checked twice. When a hook is defined, literal addresses and known names
(`check_host`; the API answers 422 naming the field). At every connection, on
the addresses the name resolves to then (`resolve`): a name may point inside
later (DNS rebinding), so every address is checked and the caller connects to
one of those it was given, without resolving again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from tracker.config import Settings

Address = IPv4Address | IPv6Address

# Names that reach the metadata service or this machine whatever DNS says.
_BLOCKED_NAMES = frozenset({
    "localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal",
})  # fmt: skip
_BLOCKED_SUFFIXES = (".localhost",)
_RESOLVE_TIMEOUT_S = 5.0


class DestinationRefused(Exception):
    """The destination (or an address its name resolves to) is not allowed; the message says why."""


def literal_address(host: str) -> Address | None:
    """The address `host` spells, in any form the resolver takes as a number (127.1, 0x7f000001), else None."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:  # numeric only: never a DNS query
        found = socket.getaddrinfo(bare, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    return ipaddress.ip_address(found[0][4][0]) if found else None


def _why_blocked(address: Address) -> str:
    if isinstance(address, IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 address.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return _why_blocked(embedded)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (the cloud metadata service lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_reserved:
        return "a reserved address"
    if isinstance(address, IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return ""


_UNIQUE_LOCAL = IPv6Network("fc00::/7")


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Public addresses only, plus what the operator allowed (networks, names and `.domain` suffixes)."""

    networks: tuple[IPv4Network | IPv6Network, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> DestinationPolicy:
        networks: list[IPv4Network | IPv6Network] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for entry in settings.forwarder.allowed_destinations:  # already checked and normalized by the setting
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError:
                if entry.startswith("."):
                    suffixes.append(entry)
                else:
                    names.add(entry)
        return cls(tuple(networks), frozenset(names), tuple(suffixes))

    def name_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def address_problem(self, address: Address) -> str:
        """Why the forwarder may not connect to `address` ('' when it may)."""
        if any(address.version == net.version and address in net for net in self.networks):
            return ""
        why = _why_blocked(address)
        return f"{address} is {why}" if why else ""

    def check_host(self, host: str) -> str:
        """Definition time, without DNS: a literal address or a known internal name ('' when acceptable)."""
        if self.name_allowed(host):
            return ""
        address = literal_address(host)
        if address is not None:
            return self.address_problem(address)
        name = host.lower().rstrip(".")
        if name in _BLOCKED_NAMES or name.endswith(_BLOCKED_SUFFIXES):
            return f"{host} names this machine or the cloud metadata service"
        return ""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Connection time: every address `host` resolves to, all checked; connect to one of these."""
        problem = self.check_host(host)
        if problem:
            raise DestinationRefused(problem)
        bare = host.strip("[]")
        try:
            found = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(bare, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT_S
            )
        except (OSError, UnicodeError, TimeoutError) as exc:
            raise OSError(f"cannot resolve {host}: {type(exc).__name__}") from None
        addresses = list(dict.fromkeys(item[4][0] for item in found))
        if not addresses:
            raise OSError(f"cannot resolve {host}")
        if self.name_allowed(host):
            return addresses
        for text in addresses:
            problem = self.address_problem(ipaddress.ip_address(text.split("%", 1)[0]))
            if problem:  # one bad address refuses the name: which one a connection takes is not ours to pick
                raise DestinationRefused(f"{host} resolves to {problem}")
        return addresses
