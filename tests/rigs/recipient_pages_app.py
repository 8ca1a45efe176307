"""The edge with its recipient pages built from the edge's own state (list names, addresses,
preferences), for the recipient page tests: in process, and as a Granian process for a browser.

`python -m tests.rigs.recipient_pages_app PORT` serves it, settings from the environment.
"""

from __future__ import annotations

import sys

from edge.app import create_app
from edge.confirm import confirm_route
from edge.pages import RecipientPages
from edge.tracking import TrackingRoutes
from edge.unsubscribe import unsubscribe_route
from tracker.config.pages import PagesSettings


def wire_pages(app: TrackingRoutes, pages_settings: PagesSettings) -> TrackingRoutes:
    """Give the `/u/` and `/cf/` routes pages that read through the edge's Postgres pool."""
    state, edge = app.state, app.state.settings.edge
    pages = RecipientPages.build(pages_settings, state, state.counters)
    app.unsubscribe = unsubscribe_route(app.keys, app.capture, edge.form_max_bytes, state.counters, pages=pages)
    app.confirm = confirm_route(
        app.keys, app.capture, edge.confirm_url, edge.form_max_bytes, state.counters, pages=pages
    )
    return app


def create_app_with_pages() -> TrackingRoutes:
    return wire_pages(create_app(), PagesSettings.from_env())


if __name__ == "__main__":
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "tests.rigs.recipient_pages_app:create_app_with_pages",
        factory=True,
        address="127.0.0.1",
        port=int(sys.argv[1]),
        interface=Interfaces.ASGI,
        workers=1,
        log_level="warning",
    ).serve()
