"""The click map: a message version's own HTML with a badge after every tracked link, made inert.

Safety comes twice: the page's Content-Security-Policy runs no script and loads nothing but images
and inline styles, and the markup that CSP does not cover (meta refresh, base, scripts kept as text)
is removed. Tracked links point at their own badge, so a click on the map never leaves the page.
"""

from __future__ import annotations

import re
from html import escape

from tracker.domain.analytics.clicks import ClickMap, LinkClicks
from tracker.domain.html_links import LinkedHTML

_STRIP = re.compile(
    r"<script\b.*?</script\s*>|<(?:meta|base|link)\b[^>]*>|<(?:iframe|object|embed|frame)\b.*?(?:</(?:iframe|object|embed|frame)\s*>|$)",
    re.IGNORECASE | re.DOTALL,
)
_CLOSE_A = re.compile(r"</a\s*>", re.IGNORECASE)


def heat(share: float | None, top: float) -> str:
    """Grey for no clicks; from yellow to red as a link nears the most clicked one."""
    if not share or top <= 0:
        return "hsl(220, 9%, 70%)"
    return f"hsl({round(55 - 55 * min(share / top, 1.0))}, 95%, 48%)"


def badge(link: LinkClicks, top: float) -> str:
    share = f"{link.share * 100:.1f}%" if link.share is not None else "0%"
    return (f'<span class="trk-badge" id="trk-link-{link.index}" data-link="{link.index}" data-clicks="{link.total}"'
            f' data-uniques="{link.uniques}" title="{escape(link.url)}: {link.total} clicks, {link.uniques} people,'
            f' {link.human} human" style="background:{heat(link.share, top)}">{link.total} &middot; {share}</span>')


def sanitise(html: str) -> str:
    return _STRIP.sub("", html)


def annotated_html(parsed: LinkedHTML, report: ClickMap) -> str:
    """The HTML with tracked hrefs pointing at their badge and a badge after each link's `</a>`."""
    by_index = {link.index: link for link in report.links}
    top = max([link.share or 0.0 for link in report.links] or [0.0])
    out: list[str] = []
    pending: str | None = None
    for part in parsed.parts:
        if isinstance(part, int):
            out.append(f"#trk-link-{part}")
            link = by_index.get(part)
            pending = badge(link, top) if link else None
            continue
        text = part
        if pending is not None:
            start = text.find(">") + 1
            close = _CLOSE_A.search(text, start)
            cut = close.end() if close else start
            text, pending = text[:cut] + pending + text[cut:], None
        out.append(text)
    return sanitise("".join(out))


STYLE = """
<style>
.trk-bar{position:fixed;top:0;left:0;right:0;z-index:2147483647;background:#111827;color:#f9fafb;
 font:14px/1.4 system-ui,sans-serif;padding:8px 12px;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
.trk-bar a{color:#93c5fd}.trk-bar .trk-current{font-weight:700;color:#fff;text-decoration:none}
.trk-spacer{height:48px}
.trk-badge{display:inline-block;margin:0 4px;padding:1px 7px;border-radius:10px;color:#111;font:700 12px/1.5
 system-ui,sans-serif;white-space:nowrap;vertical-align:middle;box-shadow:0 0 0 2px #fff}
</style>
"""


def toolbar(report: ClickMap, name: str, version_urls: dict[int, str], funnel_url: str) -> str:
    versions = " ".join(
        f'<a class="{"trk-current" if v == report.version else ""}" href="{escape(url)}">v{v}</a>'
        for v, url in version_urls.items()
    )
    return (f'<div class="trk-bar" id="trk-bar"><strong>Click map</strong><span>{escape(name or "message")}'
            f" #{report.message_id}</span><span>version: {versions}</span><span id=\"trk-total\""
            f' data-total="{report.total}">{report.total} clicks</span><a href="{escape(funnel_url)}">funnel</a>'
            f'</div><div class="trk-spacer"></div>')  # fmt: skip


def page(parsed: LinkedHTML | None, report: ClickMap, name: str, version_urls: dict[int, str], funnel_url: str) -> str:
    bar = STYLE + toolbar(report, name, version_urls, funnel_url)
    if parsed is None:  # SMS or push: no HTML to draw on, the links as a list
        top = max([link.share or 0.0 for link in report.links] or [0.0])
        rows = "".join(f"<li>{escape(link.url)} {badge(link, top)}</li>" for link in report.links)
        head = '<!doctype html><html><head><meta charset="utf-8"><title>Click map</title></head>'
        return f"{head}<body>{bar}<ol>{rows}</ol></body></html>"
    html = annotated_html(parsed, report)
    match = re.search(r"<body\b[^>]*>", html, re.IGNORECASE)
    if match:
        return html[: match.end()] + bar + html[match.end() :]
    return bar + html
