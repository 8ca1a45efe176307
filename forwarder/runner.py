"""One hook's loop: read its group, filter, deliver, acknowledge, trim; retry, pause, dead-letter.

    read   own pending entries first (after a restart or a pause), then new ones;
           every so often, entries idle too long in another worker's hands
    select the hook's filter (kinds, channels, messages, resources, profile fields)
    send   in deliveries of at most `max_events`, in commit order, one at a time
    ack    only when every delivery of what was read was acknowledged (or dead-lettered)

A failed delivery is retried with doubling pauses and jitter. After
TRACKER_HOOKS_PAUSE_AFTER_FAILURES failures in a row the hook is set to
`failing` and waits, its backlog intact, until it is resumed. A delivery that
has failed 3 times and holds events committed longer ago than
TRACKER_HOOKS_DEAD_LETTER_AFTER_S goes to the hook's dead-letter stream with
the last error, and the hook moves on.

Reading is tracker.streams.consumer's (the same reader as the flusher's);
failures of Redis and Postgres, which are ours and not the destination's, are
waited out with tracker.streams.retry (logged once when they start and once
when they end) and never counted against the hook; a fatal one (bad
credentials, no schema) ends the runner, and the worker with it. The runner's
`progress` (entries in hand, and when they last moved) is what the worker's
heartbeat follows; a backoff the destination asked for is not a stall. Dead
consumers (idle, nothing pending) are removed from the hook's group at start
and with each reclaim pass.

Longer than most modules: reading, delivering, pausing and dead-lettering
share one hook's state and read best together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from forwarder import registry
from forwarder.delivery import Delivery, DeliveryFailed, Destination
from forwarder.destinations import open_destination
from forwarder.registry import HookDefinition, Lookups
from tracker.config import Settings
from tracker.contract.events import Event, decode_batch, encode_batch, encode_event
from tracker.contract.keys import (
    ENTRY_FIELD,
    committed_streams,
    hook_dead_letter_stream,
    hook_group,
    hook_replay_stream,
)
from tracker.domain.destination_policy import DestinationPolicy
from tracker.domain.hook_definitions import compile_filter
from tracker.domain.hook_streams import create_groups
from tracker.streams.consumer import Found, GroupConsumer, as_text, field_value
from tracker.streams.heartbeat import Progress
from tracker.streams.retry import (
    ANY_TRANSIENT,
    REDIS_TRANSIENT,
    Outage,
    Retry,
    Stopping,
    error_text,
    is_operational,
    is_out_of_memory,
)

log = logging.getLogger("hooks")
_POLL_MS = 500
_READ_RETRY_S = 1.0
DEAD_LETTER_MIN_TRIES = 3
# Stopping, in this module: the hook was paused or deleted, or the worker is closing; what is in hand stays pending.


@dataclass
class Outcome:
    """A hook's counts in this worker since it started (kept across reloads; published as metrics)."""

    delivered: int = 0  # events acknowledged by the destination
    deliveries: int = 0  # sends acknowledged
    failed_attempts: int = 0  # sends that failed (each retry counts)
    dead_lettered: int = 0  # events
    send_seconds: float = 0.0  # time in acknowledged sends


def delivery_retry(settings: Settings) -> Retry:
    """Pauses between tries of a failing destination: doubling from the minimum to the maximum, with jitter."""
    return Retry(settings.forwarder.retry_min_s, settings.forwarder.retry_max_s, jitter=True, log=log)


class HookRunner:
    def __init__(self, definition: HookDefinition, settings: Settings, redis: Redis, lookups: Lookups,
                 consumer: str, *, burst: bool = False) -> None:  # fmt: skip
        self.definition = definition
        self.settings = settings
        self.redis = redis
        self.lookups = lookups
        self.consumer = consumer
        self.burst = burst
        self.group = hook_group(definition.id)
        prefix, forwarder = settings.stream_prefix, settings.forwarder
        streams = [*committed_streams(prefix, settings.stream_shards), hook_replay_stream(prefix, definition.id)]
        # A consumer idle this long with nothing pending is a dead worker's: removed from the group.
        forget_idle_ms = int(max(forwarder.claim_idle_ms, 2 * forwarder.heartbeat_ttl_s * 1000))
        self.reader = GroupConsumer(redis, streams, self.group, consumer, claim_idle_ms=forwarder.claim_idle_ms,
                                    forget_idle_ms=forget_idle_ms, log=log)  # fmt: skip
        self.streams = self.reader.streams
        self.dead_letter = hook_dead_letter_stream(prefix, definition.id)
        self.destination: Destination = open_destination(definition.destination,
                                                         DestinationPolicy.from_settings(settings))  # fmt: skip
        self.matches = compile_filter(definition.filter)
        self.failures = 0
        self.wake = asyncio.Event()  # state changed or closing: stop waiting
        self.closing = False
        self._next_claim = 0.0 if burst else time.monotonic() + forwarder.claim_idle_ms / 1000
        self.outcome = Outcome()
        self.progress = Progress()  # entries in hand and when they last moved: the worker's heartbeat follows it
        hook = f"hook {definition.id}: "
        self._trimming = Outage(log, "Redis: trim", hook)
        # Redis and Postgres are ours, not the destination's: their failures are waited out, never counted.
        self.retry = Retry(forwarder.retry_min_s, forwarder.retry_max_s, log=log, prefix=hook,
                           closing=lambda: 0.0 if self.closing else None, sleep=self._wait,
                           probe=redis.ping)  # fmt: skip
        # A failed read is tried again a second later (or when woken), making the groups again if Redis lost them.
        self.read_retry = Retry(_READ_RETRY_S, _READ_RETRY_S, log=log, prefix=hook, regroup=self._create_groups,
                                sleep=self._wait)  # fmt: skip
        self.delivery_retry = delivery_retry(settings)

    @property
    def hook_id(self) -> int:
        return self.definition.id

    def update(self, definition: HookDefinition) -> None:
        """A new state from Postgres (paused, resumed); the loop looks at it when woken."""
        self.definition = definition
        if definition.state == "active":
            self.failures = 0
        self.wake.set()

    def close(self) -> None:
        self.closing = True
        self.wake.set()

    async def run(self) -> None:
        try:
            try:
                await self.read_retry.run("Redis: create the hook's groups", self._create_groups, REDIS_TRANSIENT)
            except Stopping:
                return
            await self._forget_dead_consumers()
            while not self.closing:
                if self.definition.state != "active":
                    if self.burst:
                        return
                    await self._wait(3600)
                    continue
                reading_new = self.reader.own_pending_done
                try:
                    found = await self.read_retry.run("Redis: read", self._read, (*REDIS_TRANSIENT, ResponseError))
                except Stopping:
                    continue
                if not found:
                    if self.burst and reading_new:
                        return
                    continue
                self.progress.took()
                try:
                    await self._handle(found)
                except Stopping:
                    self.reader.reread_own_pending()  # re-read them when going on
                finally:
                    self.progress.done()
        finally:
            await self.destination.close()

    # -- reading -------------------------------------------------------------------------

    async def _read(self) -> Found:
        if self.closing or self.definition.state != "active":
            raise Stopping("read")
        count = self.settings.forwarder.read_entries
        if not self.reader.own_pending_done:
            return await self.reader.read(count)
        if time.monotonic() >= self._next_claim:
            claimed = await self.reader.reclaim(count)
            self._next_claim = time.monotonic() + (0 if claimed else self.settings.forwarder.claim_idle_ms / 1000)
            if claimed:
                return claimed
        return await self.reader.read(count, None if self.burst else _POLL_MS)

    async def _create_groups(self) -> None:
        try:
            await create_groups(self.redis, self.settings.stream_prefix, self.settings.stream_shards, self.hook_id)
        except ResponseError as exc:
            # A full Redis refuses XGROUP CREATE even for a group that exists: fine when all of them do.
            if not is_out_of_memory(exc):
                raise
            for stream in self.streams:
                if not await self.reader.has_group(stream):
                    raise

    async def _forget_dead_consumers(self) -> None:
        try:
            await self.reader.forget_dead_consumers()
        except Exception as exc:  # housekeeping: the reclaim passes do it again
            if not is_operational(exc):
                raise
            log.debug("hook %d: removing dead consumers failed: %s", self.hook_id, error_text(exc))

    # -- one read: select, deliver, acknowledge -----------------------------------------------

    async def _handle(self, found: Found) -> None:
        events: list[Event] = []
        oldest_ms = None
        acks: dict[str, list] = {}
        for stream, entries in found:
            for entry_id, fields in entries:
                acks.setdefault(stream, []).append(entry_id)
                payload = field_value(fields, ENTRY_FIELD)
                if payload is None:
                    continue  # deleted meanwhile, or not ours: nothing to send
                try:
                    events.extend(decode_batch(payload))
                except Exception as exc:  # written by the flusher, so not expected: log and skip it
                    log.error("hook %d: undecodable entry %s %s: %s", self.hook_id, stream, entry_id, error_text(exc))
                    continue
                entry_ms = int(as_text(entry_id).split("-", 1)[0])
                oldest_ms = entry_ms if oldest_ms is None else min(oldest_ms, entry_ms)
        selected = await self.retry.run("Postgres: filter lookups", lambda: self._select(events), ANY_TRANSIENT)
        size = self.definition.destination.max_events
        tag = hashlib.blake2b(repr(sorted(acks.items())).encode(), digest_size=8).hexdigest()
        for number, start in enumerate(range(0, len(selected), size)):
            delivery = Delivery(self.hook_id, f"{self.hook_id}-{tag}-{number}", selected[start : start + size])
            await self._deliver(delivery, oldest_ms or 0)
        await self.retry.run("Redis: acknowledge", lambda: self.reader.acknowledge(acks), ANY_TRANSIENT)
        self.progress.moved()
        try:
            await self.reader.trim(list(acks))
        except Exception as exc:
            if not is_operational(exc):
                raise
            self._trimming.failed(exc, "the next read trims again")
        else:
            self._trimming.recovered()

    async def _select(self, events: list[Event]) -> list[Event]:
        spec = self.definition.filter
        resource_of = await self.lookups.resources({e.message_id for e in events}) if spec.needs_resources else {}
        chosen = [event for event in events if self.matches(event, resource_of)]
        if spec.profile_fields and chosen:
            wanted = {event.profile_id for event in chosen if event.profile_id}
            matching = await self.lookups.profiles_matching(wanted, spec.profile_fields) if wanted else set()
            chosen = [event for event in chosen if event.profile_id in matching]
        return chosen

    async def _deliver(self, delivery: Delivery, oldest_ms: int) -> None:
        tries = 0
        while True:
            if self.closing or self.definition.state != "active":
                raise Stopping("deliver")
            started = time.perf_counter()
            try:
                with self.progress.idle():  # the destination's time (bounded by its own timeout), not a stall of ours
                    await self.destination.send(delivery)
            except DeliveryFailed as exc:
                error, detail = str(exc), exc.detail  # stored and shown, logged only
            except Exception as exc:  # a destination bug must not kill the worker: retried as a failure
                log.exception("hook %d: destination raised", self.hook_id)
                error = detail = f"destination error ({type(exc).__name__})"
            else:
                self.progress.moved()
                self.failures = 0
                self.outcome.delivered += len(delivery.events)
                self.outcome.deliveries += 1
                self.outcome.send_seconds += time.perf_counter() - started
                await self.retry.run("Postgres: record success", lambda: registry.record_success(
                    self.lookups.pool, self.hook_id, len(delivery.events)), ANY_TRANSIENT)  # fmt: skip
                return
            tries += 1
            self.failures += 1
            self.outcome.failed_attempts += 1
            age_s = time.time() - oldest_ms / 1000
            if tries >= DEAD_LETTER_MIN_TRIES and age_s >= self.settings.forwarder.dead_letter_after_s:
                await self._dead_letter(delivery, error, tries, detail)
                return
            limit = self.settings.forwarder.pause_after_failures
            pause = bool(limit) and self.failures >= limit
            record = functools.partial(registry.record_failure, self.lookups.pool, self.hook_id, error,
                                       self.failures, pause)  # fmt: skip
            state = await self.retry.run("Postgres: record failure", record, ANY_TRANSIENT)
            if pause:
                log.error("hook %d (%s): %d failures in a row, now %s (backlog kept): %s",
                          self.hook_id, self.definition.name, self.failures, state, detail)  # fmt: skip
                self.definition = dataclasses.replace(self.definition, state=state)
                raise Stopping("paused")
            delay = self.delivery_retry.delay(self.failures)
            left = f"{limit - self.failures} before it is paused" if limit else "no limit"
            log.warning("hook %d: delivery %s failed: %s; try %d in %.2fs (%s)",
                        self.hook_id, delivery.batch_id, detail, tries + 1, delay, left)  # fmt: skip
            with self.progress.idle():  # the destination's backoff, not a stall of ours
                await self._wait(delay)

    async def _dead_letter(self, delivery: Delivery, error: str, tries: int, detail: str) -> None:
        payload = encode_batch([encode_event(event) for event in delivery.events])
        fields = {"e": payload, "error": error[:2000], "attempts": tries, "batch_id": delivery.batch_id,
                  "at": str(time.time())}  # fmt: skip
        max_len = self.settings.forwarder.dead_letter_max_len
        await self.retry.run("Redis: dead-letter", lambda: self.redis.xadd(
            self.dead_letter, fields, maxlen=max_len, approximate=True), ANY_TRANSIENT)  # fmt: skip
        await self.retry.run("Postgres: record dead letter", lambda: registry.record_dead_letter(
            self.lookups.pool, self.hook_id, len(delivery.events)), ANY_TRANSIENT)  # fmt: skip
        self.outcome.dead_lettered += len(delivery.events)
        log.error("hook %d: %d events dead-lettered after %d tries: %s",
                  self.hook_id, len(delivery.events), tries, detail)  # fmt: skip

    # -- support -------------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        self.wake.clear()
        if self.closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

