"""What an event keeps of the request: a user-agent class and an IP prefix."""

from __future__ import annotations

import pytest

from edge.request_facts import RequestFacts, classify_user_agent, ip_prefix


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (b"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", "proxy"),
        (b"YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "proxy"),
        (b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
        (b"python-requests/2.31", "bot"),
        (b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", "mobile"),
        (b"Mozilla/5.0 (Linux; Android 14; Pixel 8)", "mobile"),
        (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", "desktop"),
        (b"Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)", "desktop"),
        (b"SomethingElse/1.0", "other"),
        (b"", "unknown"),
    ],
)
def test_user_agent_classes(ua: bytes, expected: str) -> None:
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
    return {"headers": list(headers), "client": client}


def test_forwarded_for_is_used_only_when_trusted() -> None:
    request = scope(("10.0.0.5", 1), (b"x-forwarded-for", b"198.51.100.23, 10.0.0.1"), (b"user-agent", b"curl/8"))
    assert RequestFacts(trust_forwarded_for=False).of(request) == ("bot", "10.0.0.0/24")
    assert RequestFacts(trust_forwarded_for=True).of(request) == ("bot", "198.51.100.0/24")
    forged = scope(("10.0.0.5", 1), (b"x-forwarded-for", b"<script>"))
    assert RequestFacts(trust_forwarded_for=True).of(forged) == ("unknown", "")


def test_client_ipv6_and_missing_client() -> None:
    facts = RequestFacts(trust_forwarded_for=False)
    assert facts.of(scope(("2001:db8::1", 1))) == ("unknown", "2001:db8::/48")
    assert facts.of(scope(None)) == ("unknown", "")
