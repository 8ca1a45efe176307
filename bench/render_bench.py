"""Rendering speed: one 50 KB HTML email with 30 tracked links, for 10,000 recipients, on one core.

    .venv/bin/python -m bench.render_bench [--recipients 10000] [--links 30] [--kb 50] [--rounds 5]

No services needed: the template is compiled once (as the API does once per
version), then each round builds a Renderer (one Keyring per render call) and
renders every recipient's HTML and headers. Prints each round, the median time
and recipients/s, and whether it meets the target (10,000 in at most 1 s).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

from tracker.config import Settings
from tracker.domain.message_templates import compile_template
from tracker.domain.render import MessageInfo, Renderer

TARGET_S = 1.0


def make_html(kb: int, links: int) -> str:
    paragraph = (
        '<tr><td style="font-family:Arial,sans-serif;font-size:15px;line-height:22px;color:#333333">'
        "Spring is here &amp; so are our new arrivals: light jackets, linen shirts and shoes.</td></tr>\n"
    )
    per_link = max(0, kb * 1024 // links - 200)
    body = []
    for i in range(links):
        body.append(paragraph * (per_link // len(paragraph) + 1))
        body.append(
            f'<tr><td><a href="https://shop.example.com/c/{i}?utm_source=mail&amp;utm_campaign=spring&amp;i={i}" '
            f'style="color:#0a66c2" update-clicked_link="true">Item {i}</a></td></tr>\n'
        )
    return f"<!doctype html><html><head><title>Spring</title></head><body><table>{''.join(body)}</table></body></html>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--links", type=int, default=30)
    parser.add_argument("--kb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    html = make_html(args.kb, args.links)
    started = time.perf_counter()
    template = compile_template("email", html)
    compile_s = time.perf_counter() - started
    assert len(template.links) == args.links
    settings = Settings.from_env({}, signing_keys={1: b"bench-signing-key-0123456789abcdef"})
    info = MessageInfo(message_id=123_456, version=3, channel="email", resource_id=42)
    print(
        f"message: {len(html) / 1024:.1f} KB, {len(template.links)} links; compiled once in {compile_s * 1000:.1f} ms"
    )

    times = []
    for round_ in range(1, args.rounds + 1):
        gc.collect()
        started = time.perf_counter()
        renderer = Renderer(settings, template, info)
        size = 0
        for rendered in renderer.emails(range(1_000_000, 1_000_000 + args.recipients)):
            size += len(rendered.body)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        times.append(elapsed)
        rate = args.recipients / elapsed
        print(f"round {round_}: {elapsed:.3f} s, {rate:,.0f} recipients/s ({size / 2**20:.0f} MB of HTML)")
    median = statistics.median(times)
    verdict = "meets" if median <= TARGET_S * args.recipients / 10_000 else "MISSES"
    print(
        f"median: {median:.3f} s for {args.recipients:,} recipients = {args.recipients / median:,.0f} recipients/s "
        f"({verdict} the target of 10,000 in {TARGET_S:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
