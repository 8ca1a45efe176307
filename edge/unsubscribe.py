"""`/u/{token}`: unsubscribe. GET only shows a button; POST (the button, or RFC 8058 one-click) acts.

Link scanners and mail security gateways follow every GET in an email, so a
GET must never change anything. Mail clients that support RFC 8058 POST
`List-Unsubscribe=One-Click` (form or multipart) without cookies and do not
follow redirects: the POST answers 200 with a page, whatever the body says,
and is idempotent (the flusher sets the status; repeating it changes nothing).
"""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from edge.forms import ActionForm
from tracker.contract.tokens import Keyring, TokenKind

ASK = responses.form_page(
    200, "Unsubscribe", "Press the button to stop receiving these messages.", "Unsubscribe",
    {"List-Unsubscribe": "One-Click"},
)  # fmt: skip
DONE = responses.secure_page(200, "You are unsubscribed", "You will not receive these messages any more.")
INVALID = responses.secure_page(404, "Link not valid", "This unsubscribe link is not valid; reply to the message.")


def unsubscribe_route(keys: Keyring, capture: Capture, form_max_bytes: int, counters: Any) -> ActionForm:
    return ActionForm(
        keys, capture, int(TokenKind.UNSUBSCRIBE), "unsubscribed", ASK, DONE, INVALID, form_max_bytes, counters
    )
