"""`POST /reports/{channel}/{provider}` (also `/hooks/...`): authenticate, read reports, record events.

Status codes, in the order they are decided; everything down to 503 before a byte of the body is read:
  404  no such provider on this channel, or the provider has no secret configured
  413  the declared Content-Length is over TRACKER_REPORT_MAX_BODY_BYTES
  401  credentials or signature headers missing or wrong, where the provider sends them in headers
  415  the Content-Type is not the one the provider sends
  503  (with Retry-After) the process already reads TRACKER_REPORT_UPLOAD_BUDGET_BYTES of bodies
  413  a chunked body grows over TRACKER_REPORT_MAX_BODY_BYTES (read incrementally, never past it)
  408  the body did not arrive within TRACKER_REPORT_BODY_TIMEOUT_S; the edge stops reading
  401  the signature, credentials or signed timestamp do not check out: nothing recorded
  400  the body does not parse as the provider's format: nothing recorded
  200  everything else. Reports whose ref is missing or fails verification, and provider
       events we do not track (e.g. SendGrid `processed`), are counted and skipped while
       the rest of the batch is recorded: a non-2xx answer would only make the provider
       retry the same batch for hours, and retrying cannot fix a ref.

Events go through the same buffer as the pixel (`EventBuffer.add`): micro-batched,
spooled while Redis is away; the answer never waits for Redis.
"""

from __future__ import annotations

import logging
from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from edge.reports import generic, mailgun, postmark, sendgrid, ses, smpp, sparkpost, twilio, vonage
from edge.reports.base import Provider, Report, ReportError, ReportRequest, media_type, report_event_id
from edge.reports.upload_budget import CLOSE, UploadBudget
from edge.routing import CheckedRoute
from edge.state import EdgeState
from tracker.contract.events import require_event_layout
from tracker.contract.tokens import CHANNEL_NAMES, Keyring, TokenKind, verify

log = logging.getLogger("edge.reports")
_REF = int(TokenKind.REF)
_NOT_FOUND = PlainTextResponse("no such webhook\n", status_code=404)
CHANNELS = frozenset({"email", "sms"})  # the channels providers report on
# The tuple `record` builds per report: an Event's fields in the contract's order (the tuple is the wire record).
_BUILDS = ("id", "kind", "channel", "message_id", "profile_id", "ts_us", "link_version", "link_index", "ua_class",
           "ip_prefix", "data")  # fmt: skip
require_event_layout(_BUILDS, __name__)


def build_providers(state: EdgeState) -> dict[tuple[str, str], Provider]:
    """The providers with their secrets configured, by (channel, name); the others answer 404."""
    settings = state.settings
    built = [
        generic.GenericReports.from_settings(settings, "email"),
        generic.GenericReports.from_settings(settings, "sms"),
        ses.SesNotifications.from_settings(settings),
        sendgrid.SendGridEvents.from_settings(settings),
        mailgun.MailgunEvents.from_settings(settings, state.redis),
        postmark.PostmarkEvents.from_settings(settings),
        sparkpost.SparkPostEvents.from_settings(settings),
        twilio.TwilioStatusCallbacks.from_settings(settings),
        smpp.SmppReceipts.from_settings(settings),
        vonage.VonageStatusWebhooks.from_settings(settings),
    ]
    return {(p.channel, p.name): p for p in built if p is not None}


class ProviderReportRoutes:
    """The Starlette endpoint for every provider; `counters` say what was recorded or refused."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self.keys = Keyring(state.settings.signing_keys)
        limits = state.settings.reports
        self.uploads = UploadBudget(limits.upload_budget_bytes, limits.max_body_bytes, limits.body_timeout_s)
        self.providers = build_providers(state)
        # (channel, provider, outcome) -> count; outcome: recorded, bad_ref, untracked, or an HTTP status.
        self.counters: Counter[tuple[str, str, str]] = Counter()

    def routes(self) -> list[CheckedRoute]:
        """`/reports/...`, and `/hooks/...`, the path senders were given first; POST only (else 405).

        Only the channels providers report on match, so `/reports/messages/...` (the report pages
        for people) is no provider's path: a POST there is that page's 405, not "no such webhook".
        """
        checks = {"channel": CHANNELS.__contains__}
        return [CheckedRoute(f"/{prefix}/{{channel}}/{{provider}}", self.handle, methods=["POST"], checks=checks)
                for prefix in ("reports", "hooks")]  # fmt: skip

    async def handle(self, request: Request) -> Response:
        channel, name = request.path_params["channel"], request.path_params["provider"]
        provider = self.providers.get((channel, name))
        if provider is None:
            return _NOT_FOUND
        body_read = False
        try:
            self.uploads.declared_size(request.headers)
            provider.check_headers(request.headers)
            if media_type(request.headers) not in provider.content_types:
                wanted = " or ".join(sorted(provider.content_types))
                raise ReportError(415, f"expected Content-Type {wanted}")
            async with self.uploads.read(request) as body:
                body_read = True
                hook = ReportRequest(request.url.path, request.url.query, request.headers, body)
                reports = await provider.reports(hook)
        except ReportError as exc:
            self.counters[channel, name, str(exc.status)] += 1
            log.info("provider report %s/%s refused: %d %s", channel, name, exc.status, exc.reason)
            # Answered before the body was read: what is left of it must not be taken for the next request.
            headers = exc.headers if body_read else {**exc.headers, **CLOSE}
            return PlainTextResponse(exc.reason + "\n", status_code=exc.status, headers=headers)
        outcome = self.record(channel, name, reports)
        return JSONResponse(outcome)

    def record(self, channel: str, provider: str, reports: list[Report]) -> dict[str, int]:
        outcome = {"recorded": 0, "bad_ref": 0, "untracked": 0}
        add = self.state.events.add
        for report in reports:
            if report.kind is None:
                outcome["untracked"] += 1
                continue
            token = verify(self.keys, report.ref.strip()) if report.ref else None
            # A ref minted for another channel is as wrong as a forged one.
            if token is None or token[0] != _REF or CHANNEL_NAMES.get(token[1]) != channel:
                outcome["bad_ref"] += 1
                continue
            recipient = f"{token[2]}:{token[3]}"  # message:profile, as the ref says
            event_id = report_event_id(channel, provider, report.provider_event_id, report.ts_us, report.arrival_time,
                                       kind=report.kind, recipient=recipient)  # fmt: skip
            data = report.data or None
            size = 96 + (sum(len(k) + len(v) for k, v in data.items()) if data else 0)
            # An Event's fields in `_BUILDS` order; no UA or IP: the provider called.
            add((event_id, report.kind, channel, token[2], token[3], report.ts_us, 0, -1, "", "", data), size)
            outcome["recorded"] += 1
        for key, count in outcome.items():
            if count:
                self.counters[channel, provider, key] += count
        if outcome["bad_ref"]:
            skipped = outcome["bad_ref"]
            log.info("provider report %s/%s: %d reports without a valid ref skipped", channel, provider, skipped)
        return outcome

