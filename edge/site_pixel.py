"""The website pixel: `GET /ak.js` (a small script) and `GET`/`POST /ak/e` (its collect endpoint).

The script sends a `page_view` on load and `ak.track(action, props)` calls,
with `navigator.sendBeacon` (a plain-text POST: no CORS preflight) or, where
that is missing, an image GET. When the click redirect appends the signed ref
parameter (TRACKER_SITE_LINK_PARAM) to a landing URL, the script keeps it in the
site's own localStorage and sends it with later actions, so they are tied to
the profile and message the click came from. Events are `site_action` on the
`site` channel; without a ref the profile and message are 0 (anonymous).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

import msgspec

from edge import responses
from edge.capture import Capture
from edge.forms import BodyTooLarge, read_body
from tracker.config import Settings
from tracker.contract.tokens import Channel, Keyring, TokenKind, verify

_REF = int(TokenKind.REF)
_SITE = int(Channel.SITE)
_ACTION = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_PROPS = 20
_MAX_PROP_KEY = 64
_MAX_PROP_TEXT = 256
_MAX_URL = 2048

# Kept short and dependency-free; `__PARAM__` becomes the configured ref parameter.
_SCRIPT = """(function (w, d) {
  var s = d.currentScript, site = s && s.getAttribute("data-site");
  var base = s ? s.src.replace(/\\/ak\\.js.*$/, "") : "";
  var key = "ak_ref", ref = null, param = "__PARAM__";
  try {
    var m = param && new RegExp("[?&]" + param + "=([A-Za-z0-9_-]{16,96})").exec(w.location.search);
    if (m) { ref = m[1]; w.localStorage.setItem(key, ref); } else { ref = w.localStorage.getItem(key); }
  } catch (e) {}
  function send(action, props) {
    var body = JSON.stringify({site: site, action: String(action), url: String(w.location.href).slice(0, 2048),
                               ref: ref, props: props || {}});
    var url = base + "/ak/e";
    try { if (w.navigator.sendBeacon && w.navigator.sendBeacon(url, body)) return; } catch (e) {}
    new Image().src = url + "?d=" + encodeURIComponent(body);
  }
  var queued = (w.ak && w.ak.q) || [];
  w.ak = {track: send};
  send("page_view");
  for (var i = 0; i < queued.length; i++) send(queued[i][0], queued[i][1]);
})(window, document);
"""


class SiteHit(msgspec.Struct, forbid_unknown_fields=True):
    site: str
    action: str
    url: str = ""
    ref: str | None = None
    props: dict[str, str | int | float | bool | None] = {}


_decode_hit = msgspec.json.Decoder(SiteHit).decode


class BadHit(ValueError):
    pass


def check_hit(hit: SiteHit, site_keys: frozenset[str]) -> dict[str, Any]:
    """The event's `data` for a valid hit; BadHit naming the problem otherwise."""
    if hit.site not in site_keys:
        raise BadHit("unknown site key")
    if not _ACTION.fullmatch(hit.action):
        raise BadHit("action must be 1-64 letters, digits or _.:-")
    if len(hit.url) > _MAX_URL or (hit.url and not hit.url.startswith(("http://", "https://"))):
        raise BadHit("url must be an http(s) URL of at most 2048 characters")
    if len(hit.props) > _MAX_PROPS:
        raise BadHit(f"at most {_MAX_PROPS} props")
    for name, value in hit.props.items():
        if not name or len(name) > _MAX_PROP_KEY:
            raise BadHit(f"prop names must be 1-{_MAX_PROP_KEY} characters")
        if isinstance(value, str) and len(value) > _MAX_PROP_TEXT:
            raise BadHit(f"prop {name!r} is longer than {_MAX_PROP_TEXT} characters")
    return {"site": hit.site, "action": hit.action, "url": hit.url, "props": dict(hit.props)}


class SitePixel:
    def __init__(self, keys: Keyring, capture: Capture, settings: Settings, counters: Any) -> None:
        self.keys = keys
        self.capture = capture
        self.counters = counters
        self.site_keys = frozenset(filter(None, (k.strip() for k in settings.edge.site_keys.split(","))))
        self.max_bytes = settings.edge.site_max_bytes
        script = _SCRIPT.replace("__PARAM__", settings.edge.site_link_param).encode()
        cors = [(b"access-control-allow-origin", b"*")]
        self.script = responses.complete(
            200, b"application/javascript; charset=utf-8", script,
            [(b"cache-control", b"public, max-age=3600"), (b"x-content-type-options", b"nosniff"), *cors],
        )  # fmt: skip
        self.accepted = {"type": "http.response.start", "status": 204, "headers": [*responses.NO_CACHE, *cors]}
        self.gif = {**responses.GIF_START, "headers": [*responses.GIF_START["headers"], *cors]}

    @property
    def enabled(self) -> bool:
        return bool(self.site_keys)

    async def __call__(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        method = scope["method"]
        if not self.enabled or path not in ("/ak.js", "/ak/e"):
            start, body = responses.page(404, "Not found", "There is nothing here.")
        elif path == "/ak.js":
            start, body = self.script if method in ("GET", "HEAD") else responses.METHOD_NOT_ALLOWED
        elif method == "GET":
            raw = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("d", [""])[0].encode()
            start, body = self._collect(scope, raw, image=True)
        elif method == "POST":
            try:
                raw = await read_body(scope, receive, self.max_bytes)
            except BodyTooLarge:
                raw = None
            start, body = self._collect(scope, raw, image=False)
        else:
            start, body = responses.METHOD_NOT_ALLOWED
        await send(start)
        await send(body if method != "HEAD" else responses.EMPTY_BODY)

    def _collect(self, scope: dict, raw: bytes | None, image: bool) -> tuple[dict, dict]:
        if raw is None or len(raw) > self.max_bytes:
            return _problem(413, "payload_too_large", f"events are limited to {self.max_bytes} bytes")
        try:
            hit = _decode_hit(raw)
            data = check_hit(hit, self.site_keys)
        except (msgspec.DecodeError, msgspec.ValidationError, BadHit) as exc:
            self.counters.bad_site_hits += 1
            return _problem(400, "bad_event", str(exc)[:200])
        message_id = profile_id = 0
        if hit.ref:
            token = verify(self.keys, hit.ref)
            # Only refs the click redirect minted for the site channel: an email or SMS ref is seen by
            # recipients and providers (message headers, delivery callbacks), so anyone could replay it here.
            if token is not None and token[0] == _REF and token[1] == _SITE:
                message_id, profile_id = token[2], token[3]
            else:
                self.counters.bad_tokens += 1  # a forged or foreign ref: keep the action, anonymously
        self.capture("site_action", _SITE, message_id, profile_id, scope, data=data)
        return (self.gif, responses.GIF_BODY) if image else (self.accepted, responses.EMPTY_BODY)


def _problem(status: int, code: str, message: str) -> tuple[dict, dict]:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    return responses.complete(status, b"application/json", body, [(b"access-control-allow-origin", b"*")])
