"""`/cf/{token}`: double opt-in confirmation that a link scanner cannot trigger.

The GET answers a page with a single "Confirm" button and records nothing:
security gateways and link previewers fetch every URL in a message, and a
confirmation they could trigger would prove nothing about the person. Only
the POST from that button records `confirmed`, then leads (303) to the
configured thank-you page (or a built-in one).
"""

from __future__ import annotations

from typing import Any

from edge import responses
from edge.capture import Capture
from edge.forms import ActionForm
from tracker.contract.tokens import Keyring, TokenKind

ASK = responses.form_page(
    200, "Confirm your subscription", "Press the button to confirm that you want these messages.", "Confirm", {}
)
THANKS = responses.secure_page(200, "Thank you", "Your subscription is confirmed.")
INVALID = responses.secure_page(404, "Link not valid", "This confirmation link is not valid or has expired.")


def confirm_route(keys: Keyring, capture: Capture, thanks_url: str, form_max_bytes: int, counters: Any) -> ActionForm:
    done = THANKS
    if thanks_url:  # checked as a safe absolute URL by the settings
        start = {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", thanks_url.encode()), (b"content-length", b"0"), *responses.NO_CACHE],
        }
        done = (start, responses.EMPTY_BODY)
    return ActionForm(keys, capture, int(TokenKind.CONFIRM), "confirmed", ASK, done, INVALID, form_max_bytes, counters)
