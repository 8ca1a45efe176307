"""What an event keeps of the request: a user-agent class and an IP prefix."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from edge import request_facts
from edge.request_facts import RequestFacts, classify_user_agent, ip_prefix
from tracker.contract import signals


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # Gmail's image proxy (Google's UA as documented for image proxying, seen in every ESP's logs)
        (
            b"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            ("proxy", "gmail"),
        ),
        # Yahoo's (help.yahoo.com, "Yahoo Mail proxy" SLN28749)
        (b"YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", ("proxy", "yahoo")),
        # Apple Mail Privacy Protection: a bare UA (widely reported since iOS 15)
        (b"Mozilla/5.0", ("bare", "apple-mpp")),
        # Apple Mail's own WebKit, no browser tokens: decided by timing in the flusher
        (
            b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
            ("webkit", "mac-mail"),
        ),
        # iOS Mail loading images itself (no Safari/Version token)
        (
            b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            b"Mobile/15E148",
            ("webkit", "ios-mail"),
        ),
        (b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ("bot", "googlebot")),
        (
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 "
            b"Safari/537.36",
            ("headless", "headless-chrome"),
        ),
        (b"python-requests/2.31", ("http_library", "python-requests")),
        (b"curl/8.5.0", ("http_library", "curl")),
        (
            b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            b"Version/17.0 Mobile/15E148 Safari/604.1",
            ("mobile", "ios"),
        ),
        (b"Mozilla/5.0 (Linux; Android 14; Pixel 8)", ("mobile", "android")),
        (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", ("desktop", "mac")),
        (b"Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)", ("desktop", "windows")),
        (b"SomethingElse/1.0", ("other", "")),
        (b"", ("unknown", "")),
        # Bytes past ASCII are kept as they are (lower() and strip() touch ASCII only), never a match.
        (b"Mozilla/5.0 (\xc9t\xe9; GOOGLEBOT/2.1)", ("bot", "googlebot")),
        (b" \tMOZILLA/5.0\r\n", ("bare", "apple-mpp")),
        (b"\xa0Mozilla/5.0", ("other", "")),
    ],
)
def test_user_agent_classes(ua: bytes, expected: tuple[str, str]) -> None:
    assert classify_user_agent(ua) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("not-an-ip", ""),
        ("1.2.3", ""),
        ("", ""),
    ],
)
def test_ip_prefix_keeps_no_full_address(host: str, expected: str) -> None:
    assert ip_prefix(host) == expected


def scope(client: tuple[str, int] | None, *headers: tuple[bytes, bytes]) -> dict:
    return {"method": "GET", "headers": list(headers), "client": client}


def test_forwarded_for_is_used_only_when_trusted() -> None:
    request = scope(("10.0.0.5", 1), (b"x-forwarded-for", b"198.51.100.23, 10.0.0.1"), (b"user-agent", b"curl/8"))
    curl = ("http_library", "curl")
    assert RequestFacts(trust_forwarded_for=False).of(request) == (*curl, "10.0.0.0/24", signals.NO_ACCEPT)
    assert RequestFacts(trust_forwarded_for=True).of(request) == (*curl, "198.51.100.0/24", signals.NO_ACCEPT)
    forged = scope(("10.0.0.5", 1), (b"x-forwarded-for", b"<script>"))
    assert RequestFacts(trust_forwarded_for=True).of(forged) == ("unknown", "", "", signals.NO_ACCEPT)


def test_client_ipv6_and_missing_client() -> None:
    facts = RequestFacts(trust_forwarded_for=False)
    assert facts.of(scope(("2001:db8::1", 1))) == ("unknown", "", "2001:db8::/48", signals.NO_ACCEPT)
    assert facts.of(scope(None)) == ("unknown", "", "", signals.NO_ACCEPT)


def test_header_signals() -> None:
    facts = RequestFacts(trust_forwarded_for=False)
    # A person's click in Chrome: a navigation from a user gesture that accepts HTML (Fetch Metadata spec).
    browser = scope(
        ("203.0.113.9", 1),
        (b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
        (b"sec-fetch-mode", b"navigate"),
        (b"sec-fetch-user", b"?1"),
    )
    assert facts.of(browser)[3] == signals.ACCEPTS_HTML | signals.NAVIGATE | signals.USER_ACTIVATED
    # Chrome's speculative prefetch sends Sec-Purpose: prefetch; Firefox's link prefetch X-Moz: prefetch.
    for name in (b"sec-purpose", b"purpose", b"x-moz"):
        prefetch = scope(("203.0.113.9", 1), (b"accept", b"*/*"), (name, b"Prefetch"))
        assert facts.of(prefetch)[3] == signals.PREFETCH, name
    head = {**scope(("203.0.113.9", 1), (b"accept", b"image/*")), "method": "HEAD"}
    assert facts.of(head)[3] == signals.HEAD


def test_prefetch_and_fetch_metadata_from_any_of_their_headers() -> None:
    facts = RequestFacts(trust_forwarded_for=False)
    # Each header counts wherever it is and however often it comes: one saying so is enough.
    twice = scope(("203.0.113.9", 1), (b"accept", b"*/*"), (b"sec-fetch-mode", b"navigate"),
                  (b"sec-fetch-mode", b"cors"), (b"x-purpose", b"preview"), (b"purpose", b"PREFETCH"))  # fmt: skip
    assert facts.of(twice)[3] == signals.NAVIGATE | signals.PREFETCH
    # The last Accept counts, as the last User-Agent does.
    last = scope(("203.0.113.9", 1), (b"accept", b"text/html"), (b"accept", b"image/*"))
    assert facts.of(last)[3] == 0


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (b"198.51.100.23", "198.51.100.0/24"),
        (b" 198.51.100.23 , 10.0.0.1", "198.51.100.0/24"),
        (b"2001:db8:abcd:12::1, 10.0.0.1", "2001:db8:abcd::/48"),
        (b"1.2.3.4:8080", ""),  # a port: not an address
        (b"1.2.3.", "1.2.3.0/24"),  # what ip_prefix has always said of these two
        (b"...5", ""),
        (b"1.2.\xb2.4", ""),  # latin-1 superscript two: str.isdigit takes it, but it is no digit of an address
        (b"unknown", ""),
    ],
)
def test_forwarded_for_prefix_is_ip_prefix_of_the_first_address(forwarded: bytes, expected: str) -> None:
    request = scope(("10.0.0.5", 1), (b"x-forwarded-for", forwarded))
    assert RequestFacts(trust_forwarded_for=True).of(request)[2] == expected
    assert ip_prefix(forwarded.split(b",")[0].strip().decode("latin-1")) == expected


def test_user_agent_cache_is_bounded_against_unique_user_agents() -> None:
    facts = RequestFacts(trust_forwarded_for=False)
    tracemalloc.start()
    try:
        # An attacker sending a new user agent on every request, each as long as the cache keeps.
        for i in range(3 * request_facts._UA_CACHE_MAX):
            ua = b"Mozilla/5.0 (iPhone %08d) " % i
            ua += b"x" * (request_facts._UA_CACHE_KEY_MAX - len(ua))
            assert facts.of(scope(("203.0.113.9", 1), (b"user-agent", ua)))[:2] == ("mobile", "ios")
            assert len(facts._ua_cache) <= request_facts._UA_CACHE_MAX
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 6 MB of user agents went through; what stays is the bounded cache (4096 keys of 512 bytes: 2 MB, and its table).
    assert kept < 3_500_000
    # One too long to keep is classified each time and never held.
    huge = b"Mozilla/5.0 (compatible; Googlebot/2.1) " + b"x" * 20_000
    assert facts.of(scope(None, (b"user-agent", huge)))[:2] == ("bot", "googlebot")
    assert huge not in facts._ua_cache
    assert all(len(key) <= request_facts._UA_CACHE_KEY_MAX for key in facts._ua_cache)


def _reference_of(request: dict, trust_forwarded_for: bool) -> tuple[str, str, str, int]:
    """What of() answers, said plainly: no cache and no shortcut (the edge's version is tuned for speed)."""
    ua, forwarded, accept, bits = b"", b"", None, 0
    for name, value in request["headers"]:
        if name == b"user-agent":
            ua = value
        elif name == b"accept":
            accept = value
        elif name == b"x-forwarded-for":
            forwarded = value
        elif name == b"sec-fetch-mode" and value == b"navigate":
            bits |= signals.NAVIGATE
        elif name == b"sec-fetch-user" and value == b"?1":
            bits |= signals.USER_ACTIVATED
        elif name in (b"purpose", b"sec-purpose", b"x-purpose", b"x-moz") and b"prefetch" in value.lower():
            bits |= signals.PREFETCH
    if accept is None:
        bits |= signals.NO_ACCEPT
    elif b"text/html" in accept:
        bits |= signals.ACCEPTS_HTML
    if request["method"] == "HEAD":
        bits |= signals.HEAD
    if forwarded and trust_forwarded_for:
        prefix = ip_prefix(forwarded.split(b",", 1)[0].strip().decode("latin-1"))
    elif not request.get("client"):
        prefix = ""
    else:
        host = request["client"][0]
        # The socket's peer is a valid address: its IPv4 /24 is cut from the string.
        prefix = host[: host.rfind(".")] + ".0/24" if ":" not in host and "." in host else ip_prefix(host)
    return (*classify_user_agent(ua), prefix, bits)


_NAMES = (b"user-agent", b"accept", b"x-forwarded-for", b"sec-fetch-mode", b"sec-fetch-user", b"purpose",
          b"sec-purpose", b"x-purpose", b"x-moz", b"host", b"cookie", b"accept-encoding", b"User-Agent")  # fmt: skip
_VALUES = (b"", b"navigate", b"?1", b"?0", b"Prefetch", b"prefetch;prerender", b"text/html", b"*/*",
           b"image/webp,text/html;q=0.1", b"curl/8.5.0", b"Mozilla/5.0", b" mozilla/5.0 ", b"GoogleImageProxy",
           b"Mozilla/5.0 (iPhone) AppleWebKit/605", b"1.2.3.4", b"1.2.3.4, 5.6.7.8", b" 9.8.7.6 ,x", b"1.2.\xb2.4",
           b"1.2.3.4:80", b"2001:db8::1", b"::ffff:1.2.3.4", b"1..2.3", b"...", b"a.b.c.d", b"1.2.3", b"1.2.3.4.5",
           b"\xb9.2.3.4", b"12.34.56.78\t", b",1.2.3.4", b"\xa01.2.3.4", b"x" * 600)  # fmt: skip
_CLIENTS = (None, ("198.51.100.7", 1), ("2001:db8::5", 1), ("::ffff:8.8.8.8", 1), ("", 1), ("1.2.3", 1))


def test_of_matches_the_plain_reference_with_and_without_a_warm_cache() -> None:
    rng = random.Random(20261130)
    warm = {trust: RequestFacts(trust_forwarded_for=trust) for trust in (False, True)}
    for _ in range(3000):
        headers = [(rng.choice(_NAMES), rng.choice(_VALUES)) for _ in range(rng.randrange(7))]
        request = {"method": rng.choice(("GET", "HEAD")), "headers": headers, "client": rng.choice(_CLIENTS)}
        for trust in (False, True):
            expected = _reference_of(request, trust)
            assert warm[trust].of(request) == expected, (request, trust)
            assert RequestFacts(trust_forwarded_for=trust).of(request) == expected, (request, trust)
    assert RequestFacts(trust_forwarded_for=False).of({"method": "GET", "headers": []}) == ("unknown", "", "", 4)
