"""Human or machine: the rules that judge an open or a click from the signals it kept.

Pure functions over facts, so that the flusher (judging a batch as it stores it) and
`tracker reclassify` (judging stored events again after a rule or list change) decide
exactly alike. The edge only gathers signals (edge.request_facts); history lives here:

- a machine's signals: HEAD, a prefetch header, a scanner / headless / HTTP-library / crawler
  user agent, a source network on the machine-network list;
- too fast: within `too_fast_s` of the message's render, send or delivery to that profile;
- burst: `burst_min_links` distinct links of one message from one IP prefix within `burst_window_s`;
- honeypot: a fetch of the message's invisible link marks every click of that message from that
  IP prefix within +/- `honeypot_window_s`;
- proxies and prefetch differ: Gmail's and Yahoo's image proxies fetch when the person opens the
  mail (a human open, device unknown: `image_proxy`) unless it comes at delivery time (Gmail's
  background prefetch); Apple Mail Privacy Protection's bare `Mozilla/5.0` fetch is a machine's
  (`privacy_prefetch`); a mail client's stripped WebKit UA is decided by timing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from tracker.config.flusher import FlusherSettings
from tracker.contract import signals as sig

HUMAN, MACHINE, UNKNOWN = "human", "machine", "unknown"
OPENS = frozenset({"opened", "read"})
CLICKS = frozenset({"clicked", "push_clicked"})
JUDGED = OPENS | CLICKS | {"push_opened"}
_UA_REASONS = {"scanner": "scanner_ua", "headless": "headless_ua", "http_library": "http_library", "bot": "bot_ua"}
_BROWSERS = frozenset({"mobile", "desktop"})
# A provider's delivery time and the edge's clock may disagree by a little.
CLOCK_SLACK_US = 2_000_000
US = 1_000_000


@dataclass(frozen=True, slots=True)
class Rules:
    too_fast_s: float = 20.0
    burst_window_s: float = 10.0
    burst_min_links: int = 3
    honeypot_window_s: float = 60.0

    @property
    def history_us(self) -> int:
        """How far apart two clicks may be and still judge each other."""
        return int(max(self.burst_window_s, self.honeypot_window_s) * US)


class Click(msgspec.Struct, frozen=True):
    """What the burst and honeypot rules read of a click (a Struct: made for every click of a batch)."""

    id: bytes
    ts_us: int
    message_id: int
    ip_prefix: str
    link: tuple[int, int]  # (version, index)


def judge(
    kind: str,
    ts_us: int,
    ua_class: str,
    signals: int,
    *,
    sent_at_us: int | None = None,
    network: str | None = None,
    burst: bool = False,
    honeypot: bool = False,
    rules: Rules = Rules(),
) -> tuple[str, tuple[str, ...]]:
    """(verdict, reasons) of one event; kinds that are no person's action get ("unknown", ())."""
    fast = too_fast(ts_us, sent_at_us, rules)
    return decide(kind, ua_class, signals, fast=fast, network=network, burst=burst, honeypot=honeypot)


def too_fast(ts_us: int, sent_at_us: int | None, rules: Rules) -> bool:
    """Sooner after the message reached the profile (`reference_time`) than a person opens or clicks."""
    return sent_at_us is not None and ts_us - sent_at_us < rules.too_fast_s * US


def decide(
    kind: str, ua_class: str, signals: int, *, fast: bool, network: str | None, burst: bool, honeypot: bool
) -> tuple[str, tuple[str, ...]]:
    """`judge` once the history is read down to booleans: a function of a few small values, which
    the flusher remembers per combination instead of deciding again for each event."""
    if kind not in JUDGED:
        return UNKNOWN, ()
    machine: list[str] = []
    if signals & sig.HEAD:
        machine.append("head")
    if signals & sig.PREFETCH:
        machine.append("prefetch_header")
    if ua_class in _UA_REASONS:
        machine.append(_UA_REASONS[ua_class])
    if network is not None:
        machine.append("machine_network")
    if honeypot:
        machine.append("honeypot")
    if burst:
        machine.append("burst")
    opening = kind in OPENS
    if ua_class == "bare":
        machine.append("privacy_prefetch")
    elif fast:
        # At delivery time a proxy's or a mail client's own fetch is a prefetch, not a reading.
        machine.append("privacy_prefetch" if opening and ua_class in ("proxy", "webkit") else "too_fast")
    if machine:
        return MACHINE, tuple(sorted(machine))  # one spelling per set of reasons, however they were found
    if opening and ua_class == "proxy":
        return HUMAN, ("image_proxy",)
    if opening and ua_class == "webkit":
        return HUMAN, ("mail_client",)
    if ua_class in _BROWSERS:
        return HUMAN, ("browser",)
    return UNKNOWN, ("no_signal",)


def reference_time(times: Iterable[int], ts_us: int) -> int | None:
    """The latest render, send or delivery time at or before the event (with clock slack)."""
    best = None
    for at in times:
        if at <= ts_us + CLOCK_SLACK_US and (best is None or at > best):
            best = at
    return None if best is None else min(best, ts_us)


def bursts(clicks: Iterable[Click], rules: Rules) -> set[bytes]:
    """Ids of clicks inside a window where one IP prefix clicked enough distinct links of one message."""
    window = int(rules.burst_window_s * US)
    found: set[bytes] = set()
    least = rules.burst_min_links
    for group in _by_source(clicks).values():
        if len(group) < least:  # most sources click once or twice: never a burst
            continue
        group.sort(key=lambda c: c.ts_us)
        links: Counter[tuple[int, int]] = Counter()
        start = 0
        for end, click in enumerate(group):
            links[click.link] += 1
            while click.ts_us - group[start].ts_us > window:
                old = group[start].link
                links[old] -= 1
                if not links[old]:
                    del links[old]
                start += 1
            if len(links) >= rules.burst_min_links:
                found.update(c.id for c in group[start : end + 1])
    return found


def honeypot_marked(clicks: Iterable[Click], traps: set[tuple[int, int, int]], rules: Rules) -> set[bytes]:
    """Ids of clicks near a fetch of a honeypot link (message, version, index) from the same IP prefix."""
    window = int(rules.honeypot_window_s * US)
    found: set[bytes] = set()
    if not traps:  # no honeypot among these messages' links (the option is off by default)
        return found
    for (message_id, _prefix), group in _by_source(clicks).items():
        hits = [c.ts_us for c in group if (message_id, *c.link) in traps]
        if hits:
            found.update(c.id for c in group if any(abs(c.ts_us - at) <= window for at in hits))
    return found


def _by_source(clicks: Iterable[Click]) -> dict[tuple[int, str], list[Click]]:
    groups: dict[tuple[int, str], list[Click]] = defaultdict(list)
    for click in clicks:
        if click.ip_prefix:  # no prefix: no source to compare
            groups[click.message_id, click.ip_prefix].append(click)
    return groups


def rules_of(flusher: FlusherSettings) -> Rules:
    return Rules(flusher.too_fast_s, flusher.burst_window_s, flusher.burst_links, flusher.honeypot_window_s)
