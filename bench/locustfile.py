"""Mixed recipient and provider traffic against a running edge, from the tokens of seeded messages.

    .venv/bin/python -m bench.locust_seed --fresh           # writes bench/results/locust-seed.json and .env
    locust -f bench/locustfile.py --headless --processes 2 -u 200 -r 50 -t 30s --host http://127.0.0.1:8000

Each simulated user is a stream of recipients acting on one email, one SMS
and one app push (tokens rendered by `tracker.domain.render`, see bench/locust_seed.py),
plus the ESP posting delivery reports. Weights say how often each action
comes relative to the others; redirects are never followed (the target is
example.com, and following would measure someone else's server).

Reads (`/r/{token}`): the edge holds the response open for as long as the
message is open, up to TRACKER_READ_MAX_S. A user does not wait on it: it
spawns one background hold (the first byte is the reported response time),
keeps it for a dwell drawn like real readers (most glance for a few seconds,
some read for more than TRACKER_READ_MIN_S and so make a `read` event), then
drops the connection, as a mail client closing the message does. At most one
hold per user, so held connections stay around users x dwell / wait.

Optional routes: the edge serves a provider-report route only when its secret
is configured (else 404), so at the start of a test one signed, empty report
(`[]`, which records nothing) asks whether `POST /reports/email/generic` is
enabled with the seed's secret. If not (an edge started by `tracker run`, which
sets no report secret), that task is skipped, not counted as failures: its
users pick another action at once, and the summary at the end says what was
skipped and why.

LOCUST_SEED_FILE names the seed file (default bench/results/locust-seed.json).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import gevent
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import RescheduleTaskImmediately
from locust.runners import WorkerRunner

try:
    from edge.reports.generic import sign
except ImportError:  # the webhook package is not in this checkout: the delivery-report task stays off
    sign = None

SEED_FILE = Path(os.environ.get("LOCUST_SEED_FILE", "bench/results/locust-seed.json"))
# Earlier links of a mail get most clicks.
LINK_WEIGHTS = [8, 4, 2, 1, 1, 1, 1, 1]
REPORT_TYPES = ["delivered"] * 90 + ["soft_bounce"] * 6 + ["hard_bounce"] * 3 + ["complained"]
GLANCE_S, READ_S = (1.0, 5.0), (10.5, 14.0)
REPORT_ROUTE = "/reports/email/generic"
REPORT_STATS_NAME = f"POST {REPORT_ROUTE}"
REPORT_SECRET_VARIABLE = "TRACKER_REPORT_GENERIC_EMAIL_SECRET"
log = logging.getLogger("locustfile")
_seed: dict = {}
# Route (as named in the stats) -> why this run skips it; filled at each test start by `probe_routes`.
_skipped: dict[str, str] = {}


@events.init.add_listener
def load_seed(environment, **_kwargs) -> None:
    # Read once per process; every user of the process shares it (read-only).
    if not SEED_FILE.exists():
        raise SystemExit(f"locustfile: no seed file {SEED_FILE}: run `python -m bench.locust_seed --fresh` first")
    _seed.update(json.loads(SEED_FILE.read_text()))


@events.test_start.add_listener
def probe_routes(environment, **_kwargs) -> None:
    # Every process probes for itself (workers get the host from the master); the edge is the same one.
    _skipped.clear()
    why = report_route_off(environment.host or "", _seed.get("report_generic_email_secret"))
    if why is not None:
        _skipped[REPORT_STATS_NAME] = why


@events.test_stop.add_listener
def report_skipped(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # the master (or the single process) says it once
    for route, why in _skipped.items():
        log.warning("skipped %s (not counted, no failures from it): %s", route, why)


def report_route_off(host: str, secret: str | None) -> str | None:
    """Why the delivery-report task cannot run against `host`, or None when the edge takes the seed's reports."""
    if sign is None:
        return "edge.reports.generic is not importable here, so reports cannot be signed"
    if not secret:
        return "the seed file has no report_generic_email_secret (seed again with bench.locust_seed)"
    body, stamp = b"[]", str(int(time.time()))
    headers = {"content-type": "application/json", "x-tracker-timestamp": stamp,
               "x-tracker-signature": sign(secret, stamp, body)}  # fmt: skip
    request = urllib.request.Request(host.rstrip("/") + REPORT_ROUTE, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10):
            return None
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        return None  # the edge is not reachable: every task fails and says so, this one too
    if status == 404:
        return (
            f"the edge answered 404: the route is not enabled there (no {REPORT_SECRET_VARIABLE}, as under"
            f" `tracker run`); start the edge with the seed's value (bench/results/locust-seed.env) to include it"
        )
    if status == 401:
        return f"the edge refused the seed's signature (401): its {REPORT_SECRET_VARIABLE} is not the seed's"
    return None  # anything else is the edge's fault: keep the task, so its failures show


class Recipient(FastHttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.held: gevent.Greenlet | None = None

    def on_stop(self) -> None:
        if self.held is not None:
            self.held.kill(block=False)

    @task(40)
    def open_email(self) -> None:
        mail = random.choice(_seed["email"])
        with self.client.get(mail["open"], name="/o/[token].gif", catch_response=True) as response:
            _expect(response, 200)

    @task(20)
    def click_email_link(self) -> None:
        clicks = random.choice(_seed["email"])["clicks"]
        path = random.choices(clicks, weights=LINK_WEIGHTS[: len(clicks)])[0]
        with self.client.get(path, name="/c/[token]", allow_redirects=False, catch_response=True) as response:
            _expect(response, 302)

    @task(8)
    def read_email(self) -> None:
        if self.held is None or self.held.dead:
            self.held = gevent.spawn(self._hold_read, random.choice(_seed["email"])["read"])

    @task(10)
    def click_sms_link(self) -> None:
        path = random.choice(random.choice(_seed["sms"])["links"])
        with self.client.get(path, name="/s/[code]", allow_redirects=False, catch_response=True) as response:
            _expect(response, 302)

    @task(10)
    def push_delivered(self) -> None:
        self._push("ack")

    @task(5)
    def push_opened(self) -> None:
        self._push("open")

    @task(3)
    def push_clicked(self) -> None:
        self._push("click", f"?click_action={random.choice(_seed['push_actions'])}")

    @task(4)
    def delivery_reports(self) -> None:
        if REPORT_STATS_NAME in _skipped:
            raise RescheduleTaskImmediately()  # this user takes another action at once, without a wait
        mails = random.sample(_seed["email"], k=random.randint(1, 5))
        now = time.time()
        reports = [{"type": random.choice(REPORT_TYPES), "ref": mail["ref"], "provider_event_id": uuid.uuid4().hex,
                    "timestamp": now} for mail in mails]  # fmt: skip
        body = json.dumps(reports).encode()
        stamp = str(int(now))
        headers = {"content-type": "application/json", "x-tracker-timestamp": stamp,
                   "x-tracker-signature": sign(_seed["report_generic_email_secret"], stamp, body)}  # fmt: skip
        with self.client.post(REPORT_ROUTE, data=body, headers=headers, catch_response=True) as response:
            if _expect(response, 200) and response.json().get("recorded") != len(reports):
                response.failure(f"recorded {response.text} of {len(reports)} reports")

    def _push(self, action: str, query: str = "") -> None:
        path = f"{random.choice(_seed['push'])['base']}/{action}{query}"
        with self.client.get(path, name=f"/p/[token]/{action}", catch_response=True) as response:
            _expect(response, 204)

    def _hold_read(self, path: str) -> None:
        """GET the read beacon on its own connection, keep it for a dwell, then drop it."""
        url = urlsplit(self.host)
        dwell = random.uniform(*(READ_S if random.random() < 0.3 else GLANCE_S))
        started = time.perf_counter()
        exception, first = None, b""
        try:
            # A raw (gevent) socket: the HTTP clients want the whole body, which here takes minutes.
            with socket.create_connection((url.hostname, url.port or 80), timeout=10) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUser-Agent: locust-mail\r\n\r\n".encode())
                first = sock.recv(4096)
                elapsed_ms = (time.perf_counter() - started) * 1000
                if not first.startswith(b"HTTP/1.1 200"):
                    exception = RuntimeError(f"unexpected answer: {first[:40]!r}")
                else:
                    gevent.sleep(dwell)
        except OSError as exc:
            exception, elapsed_ms = exc, (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type="GET", name="/r/[token] (held)", response_time=elapsed_ms,
            response_length=len(first), exception=exception, context={},
        )  # fmt: skip


def _expect(response, status: int) -> bool:
    if response.status_code != status:
        body = (response.text or "")[:80]
        response.failure(f"expected {status}, got {response.status_code}: {body}")
        return False
    response.success()
    return True
