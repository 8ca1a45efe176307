"""What an event keeps of the request: a user-agent class and an IP prefix."""

from __future__ import annotations

import pytest

from edge.request_facts import RequestFacts, classify_user_agent, ip_prefix
from tracker.contract import signals


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # Gmail's image proxy (Google's UA as documented for image proxying, seen in every ESP's logs)
        (b"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
         ("proxy", "gmail")),
        # Yahoo's (help.yahoo.com, "Yahoo Mail proxy" SLN28749)
        (b"YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", ("proxy", "yahoo")),
        # Apple Mail Privacy Protection: a bare UA (widely reported since iOS 15)
        (b"Mozilla/5.0", ("bare", "apple-mpp")),
        # Apple Mail's own WebKit, no browser tokens: decided by timing in the flusher
        (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
         ("webkit", "mac-mail")),
        # iOS Mail loading images itself (no Safari/Version token)
        (b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         b"Mobile/15E148", ("webkit", "ios-mail")),
        (b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ("bot", "googlebot")),
        (b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 "
         b"Safari/537.36", ("headless", "headless-chrome")),
        (b"python-requests/2.31", ("http_library", "python-requests")),
        (b"curl/8.5.0", ("http_library", "curl")),
        (b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         b"Version/17.0 Mobile/15E148 Safari/604.1", ("mobile", "ios")),
        (b"Mozilla/5.0 (Linux; Android 14; Pixel 8)", ("mobile", "android")),
        (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", ("desktop", "mac")),
        (b"Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)", ("desktop", "windows")),
        (b"SomethingElse/1.0", ("other", "")),
        (b"", ("unknown", "")),
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
    browser = scope(("203.0.113.9", 1), (b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
                    (b"sec-fetch-mode", b"navigate"), (b"sec-fetch-user", b"?1"))
    assert facts.of(browser)[3] == signals.ACCEPTS_HTML | signals.NAVIGATE | signals.USER_ACTIVATED
    # Chrome's speculative prefetch sends Sec-Purpose: prefetch; Firefox's link prefetch X-Moz: prefetch.
    for name in (b"sec-purpose", b"purpose", b"x-moz"):
        prefetch = scope(("203.0.113.9", 1), (b"accept", b"*/*"), (name, b"Prefetch"))
        assert facts.of(prefetch)[3] == signals.PREFETCH, name
    head = {**scope(("203.0.113.9", 1), (b"accept", b"image/*")), "method": "HEAD"}
    assert facts.of(head)[3] == signals.HEAD
