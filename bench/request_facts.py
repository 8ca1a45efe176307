"""Request facts per call: `RequestFacts.of()` against its version before the verdict signals.

    .venv/bin/python -m bench.request_facts [--rounds 7] [--calls 60000] [--slices 20]

No services needed; about 30 s. Each round times the current `edge.request_facts.RequestFacts.of`
and a baseline over the same mix of ASGI scopes, one right after the other, so a busy machine
slows both; it prints ns per call for each, per round and the median, and the median of the
per-round ratios. A table per request kind follows (one timing each, for where the time goes;
noisier than the mix), with the Host-only request bench.run's wrk sends as its last row.

The scopes are as Granian hands them over: a list of (lower-case name, value) tuples of new
bytes objects for every request (their hashes not yet computed, which is what a dict or set
lookup on them costs), so each timed call gets a fresh copy. A round's figure is the fastest of
`--slices` timings of its calls: the one least disturbed by other work on the machine. The
figures include the timing loop's own call and iteration, the same for both.

The baseline is `BaselineFacts` below: edge/request_facts.py as it was at commit 96f5d61,
before the verdict signals (user-agent class and IP prefix only, no family, no signal bits).
It does less than the current code, so a ratio at or under 1.00 means the verdict facts
cost nothing per request. Both keep their user-agent caches warm, as a running edge does.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable

# ip_prefix is unchanged since 96f5d61: the baseline calls the edge's own.
from edge.request_facts import RequestFacts, ip_prefix

# --- Baseline: edge/request_facts.py at 96f5d61, copied unchanged but for names and comments. ---
_BASELINE_UA_RULES: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("proxy", (b"googleimageproxy", b"yahoomailproxy", b"ymailproxy")),
    ("bot", (b"bot", b"crawl", b"spider", b"slurp", b"preview", b"scanner", b"python-", b"curl/", b"wget/",
             b"go-http-client", b"headless", b"barracuda", b"mimecast", b"proofpoint")),
    ("mobile", (b"iphone", b"android", b"mobile", b"ipad")),
    ("desktop", (b"windows", b"macintosh", b"x11", b"cros")),
)  # fmt: skip
_BASELINE_UA_CACHE_MAX = 4096


class BaselineFacts:
    """RequestFacts at 96f5d61 (before the verdict signals): (user-agent class, IP prefix)."""

    __slots__ = ("_ua_cache", "trust_forwarded_for")

    def __init__(self, trust_forwarded_for: bool) -> None:
        self.trust_forwarded_for = trust_forwarded_for
        self._ua_cache: dict[bytes, str] = {}

    def of(self, scope: dict) -> tuple[str, str]:
        ua = b""
        forwarded = b""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                ua = value
            elif name == b"x-forwarded-for":
                forwarded = value
        ua_class = self._ua_cache.get(ua) or self.ua_class(ua)
        if forwarded and self.trust_forwarded_for:
            return ua_class, ip_prefix(forwarded.split(b",", 1)[0].strip().decode("latin-1"))
        client = scope.get("client")
        if not client:
            return ua_class, ""
        host = client[0]
        if ":" not in host and "." in host:
            return ua_class, host[: host.rfind(".")] + ".0/24"
        return ua_class, ip_prefix(host)

    def ua_class(self, ua: bytes) -> str:
        found = self._ua_cache.get(ua)
        if found is None:
            found = _baseline_classify(ua)
            if len(self._ua_cache) >= _BASELINE_UA_CACHE_MAX:
                self._ua_cache.clear()
            self._ua_cache[ua] = found
        return found


def _baseline_classify(ua: bytes) -> str:
    if not ua:
        return "unknown"
    lowered = ua.lower()
    for name, needles in _BASELINE_UA_RULES:
        if any(needle in lowered for needle in needles):
            return name
    return "other"


# --- End of the baseline. ---

# The requests: what each client sends (in its own header order), as Granian's scope holds it.
GMAIL = [(b"host", b"t.example.com"), (b"connection", b"keep-alive"),
         (b"user-agent", b"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"),
         (b"accept-encoding", b"gzip, deflate, br")]  # fmt: skip
APPLE_MPP = [(b"host", b"t.example.com"), (b"accept", b"*/*"), (b"user-agent", b"Mozilla/5.0"),
             (b"accept-language", b"en-US,en;q=0.9"), (b"accept-encoding", b"gzip, deflate, br"),
             (b"connection", b"keep-alive")]  # fmt: skip
IPHONE_SAFARI = [(b"host", b"t.example.com"), (b"sec-fetch-site", b"none"),
                 (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                 (b"sec-fetch-mode", b"navigate"),
                 (b"user-agent", b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                                 b"(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
                 (b"accept-language", b"en-GB,en;q=0.9"), (b"sec-fetch-dest", b"document"),
                 (b"accept-encoding", b"gzip, deflate, br"), (b"connection", b"keep-alive")]  # fmt: skip
OUTLOOK = [(b"accept", b"image/png, image/svg+xml, image/*;q=0.8, */*;q=0.5"), (b"accept-encoding", b"gzip, deflate"),
           (b"user-agent", b"Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)"),
           (b"host", b"t.example.com"), (b"connection", b"Keep-Alive")]  # fmt: skip
CURL = [(b"host", b"t.example.com"), (b"user-agent", b"curl/8.5.0"), (b"accept", b"*/*")]
SCANNER = [(b"host", b"t.example.com"), (b"user-agent", b"Mozilla/5.0 (compatible; Barracuda Sentinel)"),
           (b"connection", b"close")]  # fmt: skip
# What a load balancer in front of the edge adds.
PROXIED = [(b"x-forwarded-for", b"198.51.100.23, 10.0.0.1"), (b"x-forwarded-proto", b"https"),
           (b"x-real-ip", b"198.51.100.23")]  # fmt: skip

KINDS: list[tuple[str, str, list[tuple[bytes, bytes]]]] = [
    ("Gmail image proxy", "GET", GMAIL),
    ("Apple MPP (bare Mozilla/5.0)", "GET", APPLE_MPP),
    ("iPhone Safari click", "GET", IPHONE_SAFARI),
    ("Outlook desktop", "GET", OUTLOOK),
    ("curl", "GET", CURL),
    ("scanner HEAD", "HEAD", SCANNER),
]
# What bench.run's wrk sends (a Host header and nothing else): not in the mix, shown on its own.
WRK = ("wrk (Host only; bench.run)", "GET", [(b"host", b"127.0.0.1:8080")])


def scopes() -> list[tuple[str, bool, dict]]:
    """(label, trust X-Forwarded-For, scope): every kind straight from the client and through a proxy."""
    found = []
    for label, method, headers in KINDS:
        found.append((label, False, {"method": method, "headers": list(headers), "client": ("203.0.113.77", "5123")}))
        proxied = {"method": method, "headers": [*headers, *PROXIED], "client": ("10.0.0.5", "40111")}
        found.append((label + ", X-Forwarded-For", True, proxied))
    return found


Of = Callable[[dict], object]


def bound(make: Callable[[bool], object], requests: list[tuple[str, bool, dict]]) -> list[tuple[Of, dict]]:
    plain, trusting = make(False), make(True)
    return [((trusting if trust else plain).of, scope) for _, trust, scope in requests]  # type: ignore[attr-defined]


def fresh(scope: dict) -> dict:
    """A copy with new bytes objects, as Granian makes for each request: their hashes are not cached yet."""
    headers = [(bytes(bytearray(name)), bytes(bytearray(value))) for name, value in scope["headers"]]
    return {**scope, "headers": headers}


def per_call_ns(calls: list[tuple[Of, dict]], total: int, slices: int) -> float:
    """The fastest of `slices` timings of `total` calls over `calls`: the least disturbed by other work."""
    for of, scope in calls:  # warm the user-agent caches, as a running edge has them
        of(fresh(scope))
    repeats = max(1, total // slices // len(calls))
    best = float("inf")
    for _ in range(slices):
        work = [(of, fresh(scope)) for of, scope in calls] * repeats
        gc.disable()
        try:
            started = time.perf_counter_ns()
            for of, scope in work:
                of(scope)
            best = min(best, (time.perf_counter_ns() - started) / len(work))
        finally:
            gc.enable()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.request_facts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=60_000, help="calls per implementation per round")
    parser.add_argument("--slices", type=int, default=20, help="timings per round; the fastest counts")
    args = parser.parse_args(argv)

    requests = scopes()
    current, baseline = bound(RequestFacts, requests), bound(BaselineFacts, requests)
    print(f"mix: {len(requests)} requests ({len(KINDS)} kinds, each direct and through a proxy), "
          f"{args.calls:,} calls per implementation per round, Python {sys.version.split()[0]}")  # fmt: skip
    now_ns, base_ns, ratios = [], [], []
    for number in range(1, args.rounds + 1):
        base = per_call_ns(baseline, args.calls, args.slices)
        now = per_call_ns(current, args.calls, args.slices)
        base_ns.append(base)
        now_ns.append(now)
        ratios.append(now / base)
        print(f"round {number}: current {now:7.0f} ns/call   baseline (96f5d61) {base:7.0f} ns/call   "
              f"ratio {now / base:.2f}")  # fmt: skip
    now, base, ratio = statistics.median(now_ns), statistics.median(base_ns), statistics.median(ratios)
    print(f"median:  current {now:7.0f} ns/call   baseline (96f5d61) {base:7.0f} ns/call   "
          f"ratio {ratio:.2f} (median of the rounds' ratios)")  # fmt: skip

    print(f"\n{'request kind':48} {'current ns':>10} {'baseline ns':>11} {'ratio':>6}")
    label, method, headers = WRK
    kinds = [*requests, (label, False, {"method": method, "headers": headers, "client": ("127.0.0.1", "50000")})]
    for label, trust, scope in kinds:
        one = [(label, trust, scope)]
        base = per_call_ns(bound(BaselineFacts, one), args.calls // 4, args.slices)
        now = per_call_ns(bound(RequestFacts, one), args.calls // 4, args.slices)
        print(f"{label:48} {now:10.0f} {base:11.0f} {now / base:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
