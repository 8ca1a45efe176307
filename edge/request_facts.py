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
# Needles are str, matched against the UA lower-cased as bytes and then decoded as latin-1 (one byte
# per character, so the same matches as on the bytes): `in` on str is several times faster than on
# bytes, and a user agent no cache holds is matched against all of them.
# Sources: Gmail's image proxy UA "... (via ggpht.com GoogleImageProxy)" (Google Workspace docs on image
# proxying); Yahoo's "YahooMailProxy" (help.yahoo.com SLN28749); scanners' UAs as published by their vendors
# and seen in ESP forums; HTTP libraries' default UAs from their own documentation.
_UA_RULES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("proxy", (("googleimageproxy", "gmail"), ("yahoomailproxy", "yahoo"), ("ymailproxy", "yahoo"))),
    ("scanner", (("barracuda", "barracuda"), ("mimecast", "mimecast"), ("proofpoint", "proofpoint"),
                 ("safelinks", "microsoft"), ("ms-office-protection", "microsoft"), ("trendmicro", "trendmicro"),
                 ("symantec", "symantec"), ("sophos", "sophos"), ("forcepoint", "forcepoint"),
                 ("scanner", "scanner"))),
    ("headless", (("headlesschrome", "headless-chrome"), ("phantomjs", "phantomjs"), ("puppeteer", "puppeteer"),
                  ("playwright", "playwright"), ("headless", "headless"))),
    ("http_library", (("python-requests", "python-requests"), ("python-httpx", "python-httpx"),
                      ("python-urllib", "python-urllib"), ("aiohttp", "aiohttp"), ("python-", "python"),
                      ("curl/", "curl"), ("wget/", "wget"), ("go-http-client", "go"), ("okhttp", "okhttp"),
                      ("java/", "java"), ("apache-httpclient", "apache-httpclient"), ("axios", "axios"),
                      ("node-fetch", "node-fetch"), ("libwww-perl", "perl"), ("guzzlehttp", "guzzle"))),
    ("bot", (("googlebot", "googlebot"), ("bingbot", "bingbot"), ("slackbot", "slack"),
             ("facebookexternalhit", "facebook"), ("whatsapp", "whatsapp"), ("telegrambot", "telegram"),
             ("discordbot", "discord"), ("twitterbot", "twitter"), ("linkedinbot", "linkedin"),
             ("skypeuripreview", "skype"), ("bot", "bot"), ("crawl", "crawler"), ("spider", "crawler"),
             ("slurp", "yahoo-slurp"), ("preview", "preview"))),
    ("mobile", (("iphone", "ios"), ("ipad", "ios"), ("android", "android"), ("mobile", "mobile"))),
    ("desktop", (("windows", "windows"), ("macintosh", "mac"), ("x11", "linux"), ("cros", "chromeos"))),
)  # fmt: skip
# Apple Mail Privacy Protection fetches with this UA and nothing else (widely reported since iOS 15).
_BARE = "mozilla/5.0"
# What a browser adds after AppleWebKit; without any of them the UA is a mail client's own WebKit
# fetch (Apple Mail, and Outlook's fetchers may send it too): decided by timing, not by the UA.
_BROWSER_TOKENS = ("safari", "chrome", "firefox", "edg/", "opr/", "version/")
_UA_CACHE_MAX = 4096
# Longer user agents are classified on every request and never cached: the cache holds at most
# _UA_CACHE_MAX keys of at most this many bytes, whatever a client sends (real ones are under 300).
_UA_CACHE_KEY_MAX = 512

# Substring tests on the hot path use bytes.partition: on CPython 3.11 `needle in value` first
# tries the needle as an integer and builds and drops a TypeError, and find/rfind/count parse
# their arguments from a tuple; partition takes one argument and costs about half of find.

# The request headers `of()` reads. Any other name (host, accept-encoding, cookie, ...: most of a
# request) costs one set lookup and is skipped; these then dispatch by plain comparisons.
_WANTED = frozenset((b"user-agent", b"accept", b"x-forwarded-for", b"sec-fetch-mode", b"sec-fetch-user",
                     b"purpose", b"sec-purpose", b"x-purpose", b"x-moz"))  # fmt: skip

# The bits as module constants: a global load, not an attribute lookup, per request.
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
        # This runs on every open and click: one pass over the headers, no calls for the ones it
        # skips, and nothing decoded but the first forwarded address.
        ua = b""
        forwarded = b""
        accept = None
        signals = 0
        for name, value in scope["headers"]:
            if name not in _WANTED:
                continue
            # The most frequent first: nearly every request has these two.
            if name == b"user-agent":
                ua = value
            elif name == b"accept":
                accept = value
            elif name == b"x-forwarded-for":
                forwarded = value
            elif name == b"sec-fetch-mode":
                if value == b"navigate":
                    signals |= _NAVIGATE
            elif name == b"sec-fetch-user":
                if value == b"?1":
                    signals |= _USER_ACTIVATED
            elif value.lower().partition(b"prefetch")[1]:  # Purpose, Sec-Purpose, X-Purpose, X-Moz
                signals |= _PREFETCH
        if accept is None:
            signals |= _NO_ACCEPT
        elif accept.partition(b"text/html")[1]:  # found (partition: see the note above _WANTED)
            signals |= _ACCEPTS_HTML
        if scope["method"] == "HEAD":
            signals |= _HEAD
        try:  # a subscript, not .get: the hit (nearly every request) makes no call
            ua_class, family = self._ua_cache[ua]
        except KeyError:
            ua_class, family = self.ua_class(ua)
        if forwarded and self.trust_forwarded_for:
            # ip_prefix(the first address), its usual case done on the bytes: ASCII digits after the
            # last dot, and before it two dots and at least one digit, is a head ip_prefix would keep
            # too. Anything else (IPv6, junk, a port, the non-ASCII digits str.isdigit also takes)
            # goes to ip_prefix itself, so the answer is the same for every input.
            first = forwarded.partition(b",")[0].strip()
            head, _, tail = first.rpartition(b".")
            digits = head.replace(b".", b"")
            if tail.isdigit() and digits.isdigit() and len(head) - len(digits) == 2:
                return ua_class, family, head.decode("ascii") + ".0/24", signals
            return ua_class, family, ip_prefix(first.decode("latin-1")), signals
        try:  # the key is optional in ASGI; servers set it
            client = scope["client"]
        except KeyError:
            client = None
        if not client:
            return ua_class, family, "", signals
        host = client[0]
        # The socket's peer is always a valid address: an IPv4 /24 is a string cut.
        if ":" not in host:
            head, dot, _ = host.rpartition(".")
            if dot:
                return ua_class, family, head + ".0/24", signals
        return ua_class, family, ip_prefix(host), signals

    def ua_class(self, ua: bytes) -> tuple[str, str]:
        """classify_user_agent(ua), remembered for the short user agents real clients send.

        The cache is emptied when full, and a user agent over _UA_CACHE_KEY_MAX bytes is never
        kept: a client sending a new or huge one each time costs itself a classification per
        request, and the process at most _UA_CACHE_MAX short keys.
        """
        found = self._ua_cache.get(ua)
        if found is None:
            found = classify_user_agent(ua)
            if len(ua) <= _UA_CACHE_KEY_MAX:
                if len(self._ua_cache) >= _UA_CACHE_MAX:
                    self._ua_cache.clear()
                self._ua_cache[ua] = found
        return found


def classify_user_agent(ua: bytes) -> tuple[str, str]:
    """(class, family): e.g. ("proxy", "gmail"), ("http_library", "curl"), ("mobile", "ios")."""
    if not ua:
        return "unknown", ""
    lowered = ua.lower().strip().decode("latin-1")  # bytes.lower: ASCII letters only, as the needles
    if lowered == _BARE:
        return "bare", "apple-mpp"
    for name, needles in _UA_RULES[:5]:  # machines first: their UAs often mimic a browser's
        for needle, family in needles:
            if needle in lowered:
                return name, family
    if "applewebkit" in lowered and not any(token in lowered for token in _BROWSER_TOKENS):
        if "iphone" in lowered or "ipad" in lowered:
            return "webkit", "ios-mail"
        return "webkit", "mac-mail" if "macintosh" in lowered else "mail-client"
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
        digits = head.replace(".", "")
        return head + ".0/24" if digits.isascii() and digits.isdigit() else ""  # not '²' or other scripts' digits
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if address.version == 6:
        if address.ipv4_mapped:
            return ip_prefix(str(address.ipv4_mapped))
        return str(ipaddress.ip_network(f"{address}/48", strict=False))
    return str(ipaddress.ip_network(f"{address}/24", strict=False))
