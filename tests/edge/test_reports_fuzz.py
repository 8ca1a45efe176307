"""Property-based: every provider parser, and the route, fed generated bodies and headers.

Three properties. Unsigned input never yields an event and is refused with a 4xx (never
another exception). Correctly signed input shaped almost like the provider's own (the
examples, with values swapped for arbitrary JSON, keys dropped) gives well-formed reports
or a 4xx, never an exception: the signature vouches for the sender, not for the shape.
And through the edge app, whatever arrives gets an answer below 500 and, unsigned, records
nothing. Numbers (signed timestamps, event times, Content-Length) are also drawn spelled every way
(tests/rigs/number_spellings.py): only ASCII digits are read, whatever else is signed. Example
counts are kept small so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from starlette.datastructures import Headers

from edge.reports import generic, mailgun, postmark, sendgrid, ses, smpp, sparkpost, twilio, vonage
from edge.reports.base import BasicAuth, Report, ReportError, ReportRequest, parse_time_us
from edge.reports.sns import SnsVerifier
from edge.reports.upload_budget import UploadBudget
from tests.edge.test_reports_email import SENDGRID_KEY, SENDGRID_PUBLIC, sendgrid_headers
from tests.rigs.edge_helpers import running_edge, stream_events
from tests.rigs.number_spellings import number_spellings
from tests.rigs.report_examples import example
from tracker.contract.events import KINDS

pytestmark = pytest.mark.slow  # fuzzing: in the full run, out of the fast loop

SECRET = "fuzz-secret-0123456789abcdef"
USER, PASSWORD = "fuzz", "fuzz-password-0123456789"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PUBLIC_URL = "https://track.example.com"
REF = "ref-not-verified-here"
FEW = hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["2024-13-01T10:00:00Z", "2024-02-30T10:00:00Z", "2024-05-31T10:00:00+99:00", "1717171717",
                       "nan", "inf", "", "permanent", "Permanent", "bounce", "HardBounce", "delivered", "10"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@st.composite
def near(draw: st.DrawFn, value: Any) -> Any:
    """`value` (a provider's example) with some values replaced by arbitrary JSON and some keys dropped."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if draw(st.integers(0, 9)) > 0:
                out[key] = draw(near(item))
        return out
    if isinstance(value, list):
        return [draw(near(item)) for item in value[: draw(st.integers(0, len(value)))]]
    return value


def loaded(name: str) -> Any:
    return json.loads(example(name, REF))


SHAPES = {
    "generic": loaded("generic_email.json"),
    "sendgrid": loaded("sendgrid_events.json"),
    "mailgun": loaded("mailgun_failed_permanent.json")["event-data"],
    "postmark": loaded("postmark_bounce.json"),
    "sparkpost": loaded("sparkpost_events.json"),
    "vonage": loaded("vonage_rejected.json"),
    "ses": loaded("ses_bounce_permanent.json"),
}
HEADER_NAMES = ["authorization", "content-type", "x-tracker-timestamp", "x-tracker-signature", "x-twilio-signature",
                sendgrid.SIGNATURE_HEADER, sendgrid.TIMESTAMP_HEADER, sparkpost.TOKEN_HEADER]
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40) | st.sampled_from(
    ["Bearer a.b.c", "nan", "sha256=00", "Basic Zm9vOmJhcg==", "application/json"])  # never valid credentials
headers_strategy = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=4)
bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as run:
        yield run


@pytest.fixture(scope="module")
def providers(runner: asyncio.Runner, redis_url: str) -> Iterator[dict[str, Any]]:
    redis = runner.run(_redis(redis_url))
    nowhere = re.compile(r"^https://sns\.example\.invalid/")  # no certificate is ever fetched
    sns = SnsVerifier(nowhere, nowhere)
    auth = BasicAuth("TEST", f"{USER}:{PASSWORD}")
    yield {
        "generic": generic.GenericReports("email", SECRET, 300),
        "sendgrid": sendgrid.SendGridEvents(sendgrid.load_public_key("TEST", SENDGRID_PUBLIC), 300),
        "mailgun": mailgun.MailgunEvents(SECRET, 300, redis, "fuzz" + str(time.time_ns())),
        "postmark": postmark.PostmarkEvents(auth),
        "ses": ses.SesNotifications(frozenset({"arn:aws:sns:us-east-1:1:t"}), sns),
        "twilio": twilio.TwilioStatusCallbacks(SECRET, PUBLIC_URL),
        "smpp": smpp.SmppReceipts(auth),
        "sparkpost": sparkpost.SparkPostEvents(auth, ""),
        "vonage": vonage.VonageStatusWebhooks(SECRET, 300),
    }
    runner.run(redis.aclose())


async def _redis(url: str) -> Redis:
    return Redis.from_url(url)


def outcome(runner: asyncio.Runner, provider: Any, body: bytes, headers: dict[str, str],
            query: str = "") -> list[Report] | ReportError:  # fmt: skip
    request = ReportRequest("/reports/x/y", query, Headers(headers), body)
    try:
        provider.check_headers(request.headers)
        return runner.run(provider.reports(request))
    except ReportError as exc:
        assert 400 <= exc.status < 500 or (exc.status == 503 and provider.name == "ses"), exc.reason
        return exc


def assert_well_formed(result: list[Report] | ReportError) -> None:
    if isinstance(result, ReportError):
        return
    for report in result:
        assert report.kind is None or report.kind in KINDS
        if report.kind is not None:
            assert isinstance(report.provider_event_id, str) and isinstance(report.ts_us, int)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in report.data.items())


# -- unsigned: refused, never an event -------------------------------------------------------------


@FEW
@given(name=st.sampled_from(["generic", "sendgrid", "mailgun", "postmark", "ses", "twilio", "smpp", "sparkpost",
                             "vonage"]), body=bodies, headers=headers_strategy)  # fmt: skip
def test_unsigned_input_is_refused_by_every_provider(runner, providers, name, body, headers):
    result = outcome(runner, providers[name], body, headers)
    assert isinstance(result, ReportError) or all(r.kind is None for r in result)


# -- signed, odd shapes: reports or a 4xx ----------------------------------------------------------


def _now() -> str:
    return str(int(time.time()))


def _generic(body: bytes) -> dict[str, str]:
    stamp = _now()
    return {"x-tracker-timestamp": stamp, "x-tracker-signature": generic.sign(SECRET, stamp, body)}


def _vonage(body: bytes) -> dict[str, str]:
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(body).hexdigest()}
    return {"authorization": "Bearer " + vonage.sign_jwt(SECRET, claims)}


SIGNERS = {
    "generic": _generic,
    "sendgrid": lambda body: sendgrid_headers(body, SENDGRID_KEY),
    "postmark": lambda body: {"authorization": BASIC},
    "sparkpost": lambda body: {"authorization": BASIC},
    "vonage": _vonage,
}


@FEW
@given(data=st.data(), name=st.sampled_from(sorted(SIGNERS)))
def test_signed_bodies_of_odd_shapes_give_reports_or_a_4xx(runner, providers, data, name):
    body = json.dumps(data.draw(near(SHAPES[name]))).encode()
    assert_well_formed(outcome(runner, providers[name], body, SIGNERS[name](body)))


@FEW
@given(event=near(SHAPES["mailgun"]), token=st.uuids())
def test_signed_mailgun_events_of_odd_shapes_give_a_report_or_a_4xx(runner, providers, event, token):
    stamp = _now()
    signature = {"timestamp": stamp, "token": str(token), "signature": mailgun.sign(SECRET, stamp, str(token))}
    body = json.dumps({"signature": signature, "event-data": event}).encode()
    assert_well_formed(outcome(runner, providers["mailgun"], body, {}))


@FEW
@given(form=st.dictionaries(st.sampled_from(["MessageSid", "MessageStatus", "ErrorCode", "RawDlrDoneDate", "SmsSid"]),
                            st.text(max_size=12), max_size=5))  # fmt: skip
def test_signed_twilio_forms_of_odd_shapes_give_a_report_or_a_4xx(runner, providers, form):
    body = urlencode(form).encode()
    signature = twilio.sign(SECRET, PUBLIC_URL + "/reports/x/y", list(form.items()))
    assert_well_formed(outcome(runner, providers["twilio"], body, {"x-twilio-signature": signature}))


@FEW
@given(lines=st.lists(st.text(max_size=40) | st.sampled_from([
    "id:1 sub:001 dlvrd:001 submit date:2405311200 done date:2413311201 stat:DELIVRD err:000",
    "id:1 sub:001 dlvrd:001 submit date:2405311200 done date:999999999999 stat:UNDELIV err:027"]), max_size=3))
def test_authenticated_smpp_receipts_of_odd_shapes_give_reports_or_a_4xx(runner, providers, lines):
    assert_well_formed(outcome(runner, providers["smpp"], "\n".join(lines).encode(), {"authorization": BASIC}))


@FEW
@given(notification=near(SHAPES["ses"]), sent_at=json_values)
def test_ses_notifications_of_odd_shapes_give_a_report_or_a_400(notification, sent_at):
    """What the SES parser does after the SNS signature checked out (signing is test_reports_ses.py's part)."""
    if not isinstance(notification, dict):
        return
    try:
        assert_well_formed([ses.ses_report(notification, "sns-message-id", sent_at)])
    except ReportError as exc:
        assert exc.status == 400


# -- numbers spelled every way: only ASCII digits are read ----------------------------------------------


def as_header(text: str) -> str:
    """`text` as a server reads it from a header: latin-1 as it is ('²' is one byte), else its UTF-8 bytes."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode().decode("latin-1")
    return text


@FEW
@given(stamp=number_spellings(max_value=4 * 10**9) | st.sampled_from(["١٧١٧١٧١٧١٧", "１７１７１７１７１７"]))
def test_a_signed_timestamp_in_other_digits_is_refused_though_the_signature_holds(runner, providers, stamp):
    body = json.dumps(SHAPES["generic"]).encode()
    stamp = as_header(stamp)
    headers = {"x-tracker-timestamp": stamp, "x-tracker-signature": generic.sign(SECRET, stamp, body)}
    result = outcome(runner, providers["generic"], body, headers)
    ascii_time = stamp.isascii() and stamp.isdigit() and len(stamp) <= 12 and abs(int(stamp) - time.time()) < 300
    assert isinstance(result, ReportError) != ascii_time, stamp


@FEW
@given(text=number_spellings(max_value=2 * 10**9) | st.builds(lambda d: f"2024-05-{d}T10:00:00Z", number_spellings()))
def test_an_event_time_is_read_from_ascii_digits_only(text):
    try:
        parse_time_us(text)
    except ReportError as exc:
        assert exc.status == 400
    else:
        assert text.strip().isascii(), text


@FEW
@given(declared=number_spellings(max_value=10**6) | st.text(max_size=8))
def test_a_declared_content_length_is_ascii_digits_or_none(declared):
    budget = UploadBudget(4096, 1024, 10.0)
    declared = as_header(declared)
    try:
        size = budget.declared_size(Headers({"content-length": declared}))
    except ReportError as exc:
        assert exc.status == 413 and declared.isascii() and declared.isdigit(), declared
    else:
        assert size is None or (declared.isascii() and declared.isdigit() and size == int(declared) <= 1024)


# -- the route: below 500, and nothing recorded from unsigned input ---------------------------------


ROUTES = ["/reports/email/generic", "/reports/email/sendgrid", "/reports/email/mailgun", "/reports/email/postmark",
          "/reports/email/ses", "/reports/email/sparkpost", "/hooks/sms/twilio", "/hooks/sms/smpp",
          "/reports/sms/vonage", "/reports/sms/nosuch"]  # fmt: skip
CONTENT_TYPES = ["application/json", "text/plain; charset=UTF-8", "application/x-www-form-urlencoded", "", "a/b"]


def test_the_route_answers_below_500_and_records_nothing_unsigned(runner, settings, redis_url):
    configured = settings.replace(public_url=PUBLIC_URL, reports={
        "generic_email_secret": SECRET, "sendgrid_public_key": SENDGRID_PUBLIC, "mailgun_signing_key": SECRET,
        "postmark_basic_auth": f"{USER}:{PASSWORD}", "ses_topic_arns": "arn:aws:sns:us-east-1:1:t",
        "sparkpost_basic_auth": f"{USER}:{PASSWORD}", "twilio_auth_token": SECRET,
        "smpp_basic_auth": "gw:other-password-0123", "vonage_signature_secret": SECRET, "max_body_bytes": 4096,
    })  # fmt: skip
    statuses: list[int] = []

    async def post(client: Any, path: str, body: bytes, headers: dict[str, str]) -> None:
        statuses.append((await client.post(path, content=body, headers=headers)).status_code)

    @FEW
    @given(path=st.sampled_from(ROUTES), body=bodies, headers=headers_strategy,
           content_type=st.sampled_from(CONTENT_TYPES))  # fmt: skip
    def property_(path: str, body: bytes, headers: dict[str, str], content_type: str) -> None:
        headers = {**headers, "content-type": content_type} if content_type else headers
        runner.run(post(client, path, body, headers))
        assert statuses[-1] < 500

    async def open_edge() -> Any:
        context = running_edge(configured)
        return context, await context.__aenter__()

    context, (app, client) = runner.run(open_edge())
    try:
        property_()
        app.state.events.flush()
    finally:
        runner.run(context.__aexit__(None, None, None))

    async def recorded() -> list:
        redis = Redis.from_url(redis_url)
        try:
            return await stream_events(redis, configured)
        finally:
            await redis.aclose()

    assert runner.run(recorded()) == []
    assert any(400 <= s < 500 for s in statuses)
