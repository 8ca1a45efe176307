"""What an event records about the request: a user-agent class and an IP prefix, not raw PII."""

from __future__ import annotations

import ipaddress

# Checked in order; the first match wins. Mail proxies fetch images for the reader
# (Gmail, Yahoo), so their opens are real but carry no device facts.
_UA_RULES: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("proxy", (b"googleimageproxy", b"yahoomailproxy", b"ymailproxy")),
    ("bot", (b"bot", b"crawl", b"spider", b"slurp", b"preview", b"scanner", b"python-", b"curl/", b"wget/",
             b"go-http-client", b"headless", b"barracuda", b"mimecast", b"proofpoint")),
    ("mobile", (b"iphone", b"android", b"mobile", b"ipad")),
    ("desktop", (b"windows", b"macintosh", b"x11", b"cros")),
)  # fmt: skip
_UA_CACHE_MAX = 4096


class RequestFacts:
    """Classifies requests; the user-agent cache is per process and bounded."""

    __slots__ = ("_ua_cache", "trust_forwarded_for")

    def __init__(self, trust_forwarded_for: bool) -> None:
        self.trust_forwarded_for = trust_forwarded_for
        self._ua_cache: dict[bytes, str] = {}

    def of(self, scope: dict) -> tuple[str, str]:
        """(user-agent class, IP prefix) of an ASGI HTTP scope."""
        ua = b""
        forwarded = b""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                ua = value
            elif name == b"x-forwarded-for":
                forwarded = value
        ua_class = self._ua_cache.get(ua) or self.ua_class(ua)  # the cache hit without a call
        if forwarded and self.trust_forwarded_for:
            return ua_class, ip_prefix(forwarded.split(b",", 1)[0].strip().decode("latin-1"))
        client = scope.get("client")
        if not client:
            return ua_class, ""
        host = client[0]
        # The socket's peer is always a valid address: an IPv4 /24 is a string cut.
        if ":" not in host and "." in host:
            return ua_class, host[: host.rfind(".")] + ".0/24"
        return ua_class, ip_prefix(host)

    def ua_class(self, ua: bytes) -> str:
        found = self._ua_cache.get(ua)
        if found is None:
            found = classify_user_agent(ua)
            if len(self._ua_cache) >= _UA_CACHE_MAX:
                self._ua_cache.clear()
            self._ua_cache[ua] = found
        return found


def classify_user_agent(ua: bytes) -> str:
    if not ua:
        return "unknown"
    lowered = ua.lower()
    for name, needles in _UA_RULES:
        if any(needle in lowered for needle in needles):
            return name
    return "other"


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
