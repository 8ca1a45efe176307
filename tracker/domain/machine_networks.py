"""The machine networks: a CIDR list whose requests are judged a machine's (mail-security gateways).

The list is a text file (`TRACKER_MACHINE_NETWORKS_FILE`, the shipped `machine_networks.txt` by
default). Events keep only their IP prefix (/24, IPv6 /48), so a prefix matches when it overlaps
a listed network. The file is read again when it changes; a malformed file is refused with its
line number and the last good list stays in force.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger("tracker.domain.machine_networks")
_CACHE_MAX = 65_536
_BLOCKS_MAX = 131_072
SHIPPED = "machine_networks.txt"


class NetworkListError(ValueError):
    """A line that is not a network; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class _Ranges:
    starts: list[int]
    ends_so_far: list[int]  # the greatest end among ranges[0..i]: overlap is one bisect away
    best: list[int]  # index of that greatest end
    labels: list[str]

    @classmethod
    def of(cls, ranges: list[tuple[int, int, str]]) -> _Ranges:
        ranges.sort()
        starts, ends, best, labels = [], [], [], []
        top, top_at = -1, -1
        for index, (start, end, label) in enumerate(ranges):
            if end > top:
                top, top_at = end, index
            starts.append(start)
            ends.append(top)
            best.append(top_at)
            labels.append(label)
        return cls(starts, ends, best, labels)

    def overlapping(self, low: int, high: int) -> str | None:
        at = bisect.bisect_right(self.starts, high) - 1
        if at >= 0 and self.ends_so_far[at] >= low:
            return self.labels[self.best[at]]
        return None


class NetworkList:
    """An immutable list; `label_of(prefix)` is the label of a listed network it overlaps, or None."""

    def __init__(self, networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]) -> None:
        v4 = [(int(n.network_address), int(n.broadcast_address), label) for n, label in networks if n.version == 4]
        v6 = [(int(n.network_address), int(n.broadcast_address), label) for n, label in networks if n.version == 6]
        self._ranges = {4: _Ranges.of(v4), 6: _Ranges.of(v6)}
        self.size = len(networks)
        self._cache: dict[str, str | None] = {}
        # "a.b" -> True when no listed network touches that /16: most sources, answered without parsing
        # the prefix (and without churning the per-prefix cache, which a busy day's /24s would fill).
        self._clear_blocks: dict[str, bool] = {}

    def label_of(self, prefix: str) -> str | None:
        if not prefix:
            return None
        if prefix.endswith(".0/24"):  # how the edge writes IPv4 prefixes
            block = prefix[: prefix.find(".", prefix.find(".") + 1)]
            clear = self._clear_blocks.get(block)
            if clear is None:
                if len(self._clear_blocks) >= _BLOCKS_MAX:  # 65,536 /16s; odd spellings could add more
                    self._clear_blocks.clear()
                clear = self._clear_blocks[block] = self._block_is_clear(block)
            if clear:
                return None
        try:
            return self._cache[prefix]
        except KeyError:
            pass
        span = _ipv4_span(prefix)
        if span is not None:
            found = self._ranges[4].overlapping(*span)
        else:
            try:
                network = ipaddress.ip_network(prefix, strict=False)
            except ValueError:
                found = None
            else:
                found = self._ranges[network.version].overlapping(
                    int(network.network_address), int(network.broadcast_address)
                )
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[prefix] = found
        return found

    def _block_is_clear(self, block: str) -> bool:
        """Whether no listed network overlaps the /16 "a.b" (False for anything else: then the full check)."""
        span = _ipv4_span(block + ".0.0/16")
        return span is not None and self._ranges[4].overlapping(*span) is None


def _ipv4_span(prefix: str) -> tuple[int, int] | None:
    """(first, last) address of an IPv4 "a.b.c.d/n" as the edge writes them, without ipaddress's cost
    (about 20 times less); None for anything else (IPv6, odd spellings), which ipaddress then reads."""
    address, _, bits = prefix.partition("/")
    digits = address.replace(".", "")
    # ASCII digits only (int() would also take "+1", " 1", "1_0" and other scripts' digits).
    if not (digits.isdigit() and digits.isascii() and bits.isdigit() and bits.isascii()):
        return None
    parts = address.split(".")
    if len(parts) != 4 or not 0 < len(parts[0]) <= 3 or not 0 < len(parts[1]) <= 3 or not 0 < len(parts[2]) <= 3 \
            or not 0 < len(parts[3]) <= 3:
        return None
    a, b, c, d = map(int, parts)
    size = int(bits)
    if a > 255 or b > 255 or c > 255 or d > 255 or size > 32:
        return None
    host = (1 << (32 - size)) - 1
    first = ((a << 24) | (b << 16) | (c << 8) | d) & ~host & 0xFFFFFFFF
    return first, first | host


def parse(text: str, source: str) -> NetworkList:
    """Lines of `CIDR [label]`, `#` comments; raises NetworkListError naming the first bad line."""
    networks = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise NetworkListError(f"{source}:{number}: expected 'CIDR [label]', found {line.strip()!r}")
        try:
            network = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            raise NetworkListError(f"{source}:{number}: {words[0]!r} is not an IP network") from None
        networks.append((network, words[1] if len(words) == 2 else "listed"))
    return NetworkList(networks)


def shipped_text() -> str:
    return resources.files("tracker.domain").joinpath(SHIPPED).read_text()


class MachineNetworks:
    """The list in force, read again when the file changes (looked at every `check_every_s` at most)."""

    def __init__(self, path: str, check_every_s: float = 5.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._checked_at = -1e18
        self._seen: tuple[int, int] | None = None
        self.list = self._load_first()

    def _load_first(self) -> NetworkList:
        if not self.path:
            return parse(shipped_text(), SHIPPED)
        self._seen = _stamp(self.path)
        # At start a bad file is an error the operator sees at once, not a silent empty list.
        return parse(Path(self.path).read_text(), self.path)

    def current(self) -> NetworkList:
        if not self.path:
            return self.list
        now = time.monotonic()
        if now - self._checked_at < self.check_every_s:
            return self.list
        self._checked_at = now
        try:
            stamp = _stamp(self.path)
            if stamp != self._seen:
                self._seen = stamp
                self.list = parse(Path(self.path).read_text(), self.path)
                log.info("machine networks: %d networks from %s", self.list.size, self.path)
        except (OSError, NetworkListError) as exc:
            log.warning("machine networks: %s; keeping the last good list (%d networks)", exc, self.list.size)
        return self.list


def _stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size
