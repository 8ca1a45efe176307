"""What an event records about the request: a user-agent class and family, an IP prefix and a
few header signals (tracker.contract.signals). No raw PII: never the full address or the UA text.

These are the edge's half of the human-or-machine verdict: facts it can read off the request
it is answering, with no I/O. The rules that weigh them, and the ones that need history
(timing, bursts, honeypots, machine networks), run in the flusher (tracker.domain.verdicts).
"""

from __future__ import annotations

import ipaddress

from tracker.contract import signals as sig

# (class, ((needle, family), ...)), checked in order; the first needle found in the lower-cased UA wins.
# Sources: Gmail's image proxy UA "... (via ggpht.com GoogleImageProxy)" (Google Workspace docs on image
# proxying); Yahoo's "YahooMailProxy" (help.yahoo.com SLN28749); scanners' UAs as published by their vendors
# and seen in ESP forums; HTTP libraries' default UAs from their own documentation.
_UA_RULES: tuple[tuple[str, tuple[tuple[bytes, str], ...]], ...] = (
    ("proxy", ((b"googleimageproxy", "gmail"), (b"yahoomailproxy", "yahoo"), (b"ymailproxy", "yahoo"))),
    ("scanner", ((b"barracuda", "barracuda"), (b"mimecast", "mimecast"), (b"proofpoint", "proofpoint"),
                 (b"safelinks", "microsoft"), (b"ms-office-protection", "microsoft"), (b"trendmicro", "trendmicro"),
                 (b"symantec", "symantec"), (b"sophos", "sophos"), (b"forcepoint", "forcepoint"),
                 (b"scanner", "scanner"))),
    ("headless", ((b"headlesschrome", "headless-chrome"), (b"phantomjs", "phantomjs"), (b"puppeteer", "puppeteer"),
                  (b"playwright", "playwright"), (b"headless", "headless"))),
    ("http_library", ((b"python-requests", "python-requests"), (b"python-httpx", "python-httpx"),
                      (b"python-urllib", "python-urllib"), (b"aiohttp", "aiohttp"), (b"python-", "python"),
                      (b"curl/", "curl"), (b"wget/", "wget"), (b"go-http-client", "go"), (b"okhttp", "okhttp"),
                      (b"java/", "java"), (b"apache-httpclient", "apache-httpclient"), (b"axios", "axios"),
                      (b"node-fetch", "node-fetch"), (b"libwww-perl", "perl"), (b"guzzlehttp", "guzzle"))),
    ("bot", ((b"googlebot", "googlebot"), (b"bingbot", "bingbot"), (b"slackbot", "slack"),
             (b"facebookexternalhit", "facebook"), (b"whatsapp", "whatsapp"), (b"telegrambot", "telegram"),
             (b"discordbot", "discord"), (b"twitterbot", "twitter"), (b"linkedinbot", "linkedin"),
             (b"skypeuripreview", "skype"), (b"bot", "bot"), (b"crawl", "crawler"), (b"spider", "crawler"),
             (b"slurp", "yahoo-slurp"), (b"preview", "preview"))),
    ("mobile", ((b"iphone", "ios"), (b"ipad", "ios"), (b"android", "android"), (b"mobile", "mobile"))),
    ("desktop", ((b"windows", "windows"), (b"macintosh", "mac"), (b"x11", "linux"), (b"cros", "chromeos"))),
)  # fmt: skip
# Apple Mail Privacy Protection fetches with this UA and nothing else (widely reported since iOS 15).
_BARE = b"mozilla/5.0"
# What a browser adds after AppleWebKit; without any of them the UA is a mail client's own WebKit
# fetch (Apple Mail, and Outlook's fetchers may send it too): decided by timing, not by the UA.
_BROWSER_TOKENS = (b"safari", b"chrome", b"firefox", b"edg/", b"opr/", b"version/")
_UA_CACHE_MAX = 4096

# Header name -> what it tells; one dict lookup per header on the hot path.
_UA, _FORWARDED, _ACCEPT, _MODE, _USER, _PURPOSE = range(6)
_HEADERS = {b"user-agent": _UA, b"x-forwarded-for": _FORWARDED, b"accept": _ACCEPT, b"sec-fetch-mode": _MODE,
            b"sec-fetch-user": _USER, b"purpose": _PURPOSE, b"sec-purpose": _PURPOSE, b"x-purpose": _PURPOSE,
            b"x-moz": _PURPOSE}  # fmt: skip


# The bits as module constants: a global load, not an attribute lookup, per header.
_HEAD, _PREFETCH, _NO_ACCEPT = sig.HEAD, sig.PREFETCH, sig.NO_ACCEPT
_NAVIGATE, _USER_ACTIVATED, _ACCEPTS_HTML = sig.NAVIGATE, sig.USER_ACTIVATED, sig.ACCEPTS_HTML


class RequestFacts:
    """Classifies requests; the user-agent cache is per process and bounded."""

    __slots__ = ("_ua_cache", "trust_forwarded_for")

    def __init__(self, trust_forwarded_for: bool) -> None:
        self.trust_forwarded_for = trust_forwarded_for
        self._ua_cache: dict[bytes, tuple[str, str]] = {}

    def of(self, scope: dict) -> tuple[str, str, str, int]:
        """(user-agent class, user-agent family, IP prefix, signal bits) of an ASGI HTTP scope."""
        ua = b""
        forwarded = b""
        accept = None
        signals = 0
        wanted = _HEADERS.get
        for name, value in scope["headers"]:
            which = wanted(name)
            if which is None:
                continue
            if which is _UA:
                ua = value
            elif which is _ACCEPT:
                accept = value
            elif which is _MODE:
                if value == b"navigate":
                    signals |= _NAVIGATE
            elif which is _USER:
                if value == b"?1":
                    signals |= _USER_ACTIVATED
            elif which is _FORWARDED:
                forwarded = value
            elif b"prefetch" in value.lower():
                signals |= _PREFETCH
        if accept is None:
            signals |= _NO_ACCEPT
        elif b"text/html" in accept:
            signals |= _ACCEPTS_HTML
        if scope["method"] == "HEAD":
            signals |= _HEAD
        ua_class, family = self._ua_cache.get(ua) or self.ua_class(ua)  # the cache hit without a call
        if forwarded and self.trust_forwarded_for:
            return ua_class, family, ip_prefix(forwarded.split(b",", 1)[0].strip().decode("latin-1")), signals
        client = scope.get("client")
        if not client:
            return ua_class, family, "", signals
        host = client[0]
        # The socket's peer is always a valid address: an IPv4 /24 is a string cut.
        if ":" not in host and "." in host:
            return ua_class, family, host[: host.rfind(".")] + ".0/24", signals
        return ua_class, family, ip_prefix(host), signals

    def ua_class(self, ua: bytes) -> tuple[str, str]:
        found = self._ua_cache.get(ua)
        if found is None:
            found = classify_user_agent(ua)
            if len(self._ua_cache) >= _UA_CACHE_MAX:
                self._ua_cache.clear()
            self._ua_cache[ua] = found
        return found


def classify_user_agent(ua: bytes) -> tuple[str, str]:
    """(class, family): e.g. ("proxy", "gmail"), ("http_library", "curl"), ("mobile", "ios")."""
    if not ua:
        return "unknown", ""
    lowered = ua.lower().strip()
    if lowered == _BARE:
        return "bare", "apple-mpp"
    for name, needles in _UA_RULES[:5]:  # machines first: their UAs often mimic a browser's
        for needle, family in needles:
            if needle in lowered:
                return name, family
    if b"applewebkit" in lowered and not any(token in lowered for token in _BROWSER_TOKENS):
        if b"iphone" in lowered or b"ipad" in lowered:
            return "webkit", "ios-mail"
        return "webkit", "mac-mail" if b"macintosh" in lowered else "mail-client"
    for name, needles in _UA_RULES[5:]:
        for needle, family in needles:
            if needle in lowered:
                return name, family
    return "other", ""


def ip_prefix(host: str) -> str:
    """The /24 of an IPv4 address or the /48 of an IPv6 one; "" when it is not an IP."""
    if not host:
        return ""
    if host.count(".") == 3 and ":" not in host:
        head, _, _ = host.rpartition(".")
        return head + ".0/24" if head.replace(".", "").isdigit() else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if address.version == 6:
        if address.ipv4_mapped:
            return ip_prefix(str(address.ipv4_mapped))
        return str(ipaddress.ip_network(f"{address}/48", strict=False))
    return str(ipaddress.ip_network(f"{address}/24", strict=False))
