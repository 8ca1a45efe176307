"""A hooks worker killed with SIGKILL mid-delivery: its successor delivers everything, nothing is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import uuid
from collections import defaultdict

from tests.rigs.api_helpers import running_api
from tests.rigs.flusher_helpers import drain, event, flusher_env, make_message, make_profiles, push
from tests.rigs.hook_helpers import (  # noqa: F401
    LOOPBACK_ALLOWED,
    SECRET,
    SECRET_KEYS,
    hook_settings,
    http_receiver,
    no_hooks_left,
    until,
)

pytestmark = __import__("pytest").mark.slow


def start_worker(settings, consumer: str) -> subprocess.Popen:
    env = flusher_env(
        settings, TRACKER_HOOKS_CONSUMER=consumer, TRACKER_HOOKS_CLAIM_IDLE_MS="500", TRACKER_HOOKS_RELOAD_S="0.2",
        TRACKER_HOOKS_RETRY_MIN_S="0.05", TRACKER_HOOKS_RETRY_MAX_S="0.2",
        TRACKER_HOOKS_ALLOWED_DESTINATIONS=",".join(LOOPBACK_ALLOWED), TRACKER_HOOKS_SECRET_KEYS=SECRET_KEYS,
    )  # fmt: skip
    log = tempfile.TemporaryFile()
    return subprocess.Popen([sys.executable, "-m", "forwarder.cli"], env=env, stdout=log, stderr=log)


async def test_a_worker_killed_mid_delivery_loses_nothing_and_repeats_only_event_ids(settings, redis, pg):
    settings = hook_settings(settings, pause_after_failures=0)
    message = await make_message(pg)
    profiles = await make_profiles(pg, 50)
    events = [event(message, profiles[n % 50], "opened") for n in range(300)]
    with http_receiver() as receiver:
        receiver.default = "slow"
        async with running_api(settings) as api:
            hook = {"name": "crm", "destination": {"type": "http", "url": receiver.url, "secret": SECRET,
                                                   "timeout_s": 2.0, "max_events": 10}}  # fmt: skip
            await api.call("POST", "/hooks", json=hook)
        await push(redis, settings, events, per_entry=20)
        await drain(settings)

        first = start_worker(settings, "doomed")
        try:
            await until(lambda: len(receiver.accepted) >= 5, 20, "the first deliveries")
            first.send_signal(signal.SIGKILL)  # in the middle of a 0.2 s delivery, its read unacknowledged
            first.wait()
        finally:
            if first.poll() is None:
                first.kill()
        delivered_before = len(receiver.accepted)
        assert delivered_before < 30, "everything was delivered before the kill"

        receiver.default = "200"
        successor = start_worker(settings, "successor")  # another name: takes over the dead one's entries
        try:
            sent = {str(uuid.UUID(bytes=e.id)) for e in events}
            await until(lambda: sent <= {e["id"] for e in receiver.events()}, 30, "every event, after the kill")
        finally:
            successor.send_signal(signal.SIGTERM)
            assert successor.wait(15) == 0

    copies: dict[str, list[dict]] = defaultdict(list)
    for received in receiver.accepted:
        assert received.signed_by(SECRET)
        for document in received.json["events"]:
            copies[document["id"]].append(document)
    assert set(copies) == sent
    # A repeat is the same event under the same id, so a receiver that dedupes by id sees each once.
    for documents in copies.values():
        assert all(document == documents[0] for document in documents)
    assert len(receiver.accepted) > delivered_before
