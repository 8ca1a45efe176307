"""The `hooks` worker: one `HookRunner` task per hook, kept in step with the definitions in Postgres.

Definitions are re-read every TRACKER_HOOKS_RELOAD_S, and at once when the API
bumps the version key. A new hook gets a runner; a changed destination or
filter gets a fresh one; a paused or resumed hook has its runner woken; a
deleted one has its runner stopped. The worker also answers test requests from
the API (one sample event through a hook's destination) and keeps a heartbeat.

`close()` (SIGTERM) stops every runner after the delivery in hand; nothing
unacknowledged is lost, it stays pending in the hook's group. Every wait of
the shutdown is bounded.

Operational failures of Redis and Postgres are retried and logged once when
they start and once when they end. A fatal one (bad credentials, no such
database, the schema missing), in the worker or in any runner, stops the
worker: `run()` raises it and `hooks` exits 1 with one line. The heartbeat
follows the runners' progress: a runner holding entries that have not moved
for a heartbeat TTL (its Redis or Postgres stuck) lets it lapse, so
`hooks --check` fails.

Longer than most modules: the runners' lifecycle, the helper tasks and the
bounded shutdown decide together when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable

import asyncpg
import msgspec
from redis.asyncio.client import Pipeline

from forwarder.delivery import NO_ANSWER, Delivery, DeliveryFailed
from forwarder.destinations import open_destination
from forwarder.registry import HookDefinition, Lookups, load_hook, load_hooks
from forwarder.replays import Replays
from forwarder.runner import HookRunner, Outcome
from tracker.config import Settings
from tracker.contract.events import EventIds
from tracker.contract.keys import (
    forwarder_heartbeat_key,
    forwarder_metrics_key,
    forwarders_set_key,
    hook_test_requests_key,
    hooks_count_key,
    hooks_version_key,
)
from tracker.contract.snapshots import ForwarderHeartbeatFacts, ForwarderMetricsSnapshot, HookMetrics, encode
from tracker.domain.destination_policy import DestinationPolicy
from tracker.domain.hook_definitions import TestReply, TestRequest, sample_event
from tracker.domain.secret_box import SecretBox, SecretKeyMissing
from tracker.streams.consumer import open_redis
from tracker.streams.heartbeat import Heartbeat, default_consumer_name, most_stalled
from tracker.streams.retry import (
    ANY_TRANSIENT,
    REDIS_TRANSIENT,
    Outage,
    Retry,
    Stopping,
    describe,
    is_fatal,
    is_operational,
    is_out_of_memory,
)
from tracker.streams.tasks import TimedOut, bounded, stop_tasks

log = logging.getLogger("hooks")
_VERSION_POLL_S = 0.5
_STOP_GRACE_S = 10.0
_CLOSE_TIMEOUT_S = 2.0
_decode_request = msgspec.json.Decoder(TestRequest).decode


class HooksWorker:
    def __init__(self, settings: Settings, *, burst: bool = False) -> None:
        settings.require("redis_url", "database_url")
        self.settings = settings
        self.burst = burst
        self.consumer = settings.forwarder.consumer or default_consumer_name()
        # Raw XREADGROUP and XAUTOCLAIM replies, as the runners' readers (tracker.streams.consumer) take them.
        self.redis = open_redis(settings.redis_url, timeout_s=10, connect_timeout_s=5, cluster=settings.redis_cluster)
        self.pool: asyncpg.Pool | None = None
        self.replays: Replays | None = None
        self.runners: dict[int, tuple[HookRunner, asyncio.Task]] = {}
        self._closing = asyncio.Event()
        self._version: bytes | None = None
        self.ids = EventIds()
        self.box = SecretBox.from_settings(settings)
        self.policy = DestinationPolicy.from_settings(settings)
        self._unreadable: dict[int, str] = {}  # hooks left out for their secrets, each logged once
        # Test deliveries at once in this worker (the API bounds them over all edges too).
        self._test_slots = asyncio.Semaphore(settings.forwarder.test_concurrency)
        # Per hook, for as long as this worker runs: a runner made again on reload carries on counting.
        self.outcomes: dict[int, Outcome] = {}
        prefix = settings.stream_prefix
        self.metrics_key, self.workers_key = forwarder_metrics_key(prefix, self.consumer), forwarders_set_key(prefix)
        self.heartbeat = Heartbeat(self.redis, forwarder_heartbeat_key(prefix, self.consumer),
                                   settings.forwarder.heartbeat_ttl_s, self._heartbeat_facts, also=self._publish,
                                   keep=(self.metrics_key,), stalled_for=self._stalled_for, log=log)  # fmt: skip
        # Redis and Postgres failures are waited out (the worker's own; the runners have theirs), until closing.
        self.retry = Retry(settings.forwarder.retry_min_s, settings.forwarder.retry_max_s, log=log,
                           closing=lambda: 0.0 if self._closing.is_set() else None,
                           sleep=self._sleep, probe=self.redis.ping)  # fmt: skip
        self.failure: BaseException | None = None  # what stopped the worker (fatal), raised by run()

    def close(self) -> None:
        """Stop after the deliveries in hand (safe from a signal handler); `run()` then returns."""
        if not self._closing.is_set():
            log.info("stopping: finishing the deliveries in hand")
            self._closing.set()
            for runner, _task in self.runners.values():
                runner.close()

    async def run(self) -> None:
        log.debug("hooks worker %s starting%s", self.consumer, " (burst)" if self.burst else "")
        helpers: list[asyncio.Task] = []
        try:
            self.pool = await self.retry.run("Postgres: connect", lambda: asyncpg.create_pool(
                self.settings.database_url, min_size=1, max_size=6, timeout=10), ANY_TRANSIENT)  # fmt: skip
            self.replays = Replays(self.settings, self.redis, self.pool, self.consumer)
            await self.retry.run("Redis: connect", self.redis.ping)  # bad credentials end it here
            if not self.burst:
                helpers = [
                    asyncio.create_task(self._helper("heartbeat", self._heartbeat_loop())),
                    asyncio.create_task(self._helper("test deliveries", self._test_loop())),
                    asyncio.create_task(self._helper("replay jobs", self.replays.loop(self._closing))),
                ]
            if self.burst:  # the replays asked for so far, on the replay streams before the runners read them
                await self.retry.run("replay jobs", lambda: self.replays.run_open_jobs(self._closing.is_set),
                                     ANY_TRANSIENT)  # fmt: skip
            await self.retry.run("Postgres: load hook definitions", self.reload, ANY_TRANSIENT)
            if self.burst:
                await asyncio.gather(*(task for _runner, task in self.runners.values()))
            else:
                await self._watch()
        except Stopping:
            pass
        finally:
            await self._clean_up(helpers)
        if self.failure is not None:
            raise self.failure

    async def _watch(self) -> None:
        """Reload the definitions when the version key changes, and every TRACKER_HOOKS_RELOAD_S."""
        version_outage = Outage(log, "Redis: read the hooks version")
        reload_outage = Outage(log, "reload the hook definitions")
        next_reload = time.monotonic() + self.settings.forwarder.reload_s
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _VERSION_POLL_S)
            if self._closing.is_set():
                break
            try:
                version = await self.redis.get(hooks_version_key(self.settings.stream_prefix))
            except Exception as exc:
                if not is_operational(exc, REDIS_TRANSIENT):  # e.g. the credentials no longer accepted
                    raise
                version_outage.failed(exc, "trying again")
                continue
            version_outage.recovered()
            if version != self._version or time.monotonic() >= next_reload:
                next_reload = time.monotonic() + self.settings.forwarder.reload_s
                self._version = version
                try:
                    await self.reload()
                except Exception as exc:
                    if not is_operational(exc):
                        raise
                    reload_outage.failed(exc, "trying again at the next reload")
                else:
                    reload_outage.recovered()

    async def _clean_up(self, helpers: list[asyncio.Task]) -> None:
        """Stop everything, each wait bounded: a stuck call is left behind rather than holding up the exit."""
        self.close()
        await stop_tasks(helpers, _CLOSE_TIMEOUT_S, what="helper tasks", log=log)
        await self._stop_runners(list(self.runners))
        await self.heartbeat.forget(self.metrics_key, timeout_s=_CLOSE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await bounded(self.redis.srem(self.workers_key, self.consumer), _CLOSE_TIMEOUT_S)
        if self.pool is not None:
            try:
                await bounded(self.pool.close(), _STOP_GRACE_S)
            except (TimedOut, Exception):
                self.pool.terminate()
        with contextlib.suppress(Exception):
            await bounded(self.redis.aclose(), _CLOSE_TIMEOUT_S)
        log.info("hooks worker %s stopped: %d events delivered", self.consumer, self.delivered)

    def _fail(self, exc: BaseException) -> None:
        """A fatal error somewhere: the worker stops, and `run()` raises it."""
        if self.failure is None:
            self.failure = exc
        self.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def reload(self) -> None:
        assert self.pool is not None
        definitions, unreadable = await load_hooks(self.pool, self.box)
        for hook_id, why in unreadable.items():
            if self._unreadable.get(hook_id) != why:
                log.error("hook %d: left out until its secrets open: %s", hook_id, why)
        self._unreadable = unreadable
        # Heals the flusher's switch if Redis lost it (not bumping the version: no reload loop).
        try:
            await self.redis.set(hooks_count_key(self.settings.stream_prefix), len(definitions) + len(unreadable))
        except Exception as exc:
            if not is_out_of_memory(exc):  # Redis full: the switch it has is kept, healing waits for room
                raise
        gone = [hook_id for hook_id in self.runners if hook_id not in definitions]
        changed = [hook_id for hook_id, (runner, _t) in self.runners.items()
                   if hook_id in definitions and runner.definition.version != definitions[hook_id].version]  # fmt: skip
        await self._stop_runners(gone + changed)
        lookups = Lookups(self.pool)
        for hook_id, definition in definitions.items():
            if hook_id in self.runners:
                runner = self.runners[hook_id][0]
                if runner.definition.state != definition.state:
                    runner.update(definition)
                continue
            runner = HookRunner(definition, self.settings, self.redis, lookups, self.consumer, burst=self.burst)
            runner.outcome = self.outcomes.setdefault(hook_id, Outcome())
            self.runners[hook_id] = (runner, asyncio.create_task(self._run_runner(runner)))

    async def _run_runner(self, runner: HookRunner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_fatal(exc):
                self._fail(exc)
                return
            log.error("hook %d: runner failed (%s); it restarts at the next reload", runner.hook_id, describe(exc),
                      exc_info=exc)  # fmt: skip
            self.runners.pop(runner.hook_id, None)

    async def _stop_runners(self, hook_ids: list[int]) -> None:
        stopping = [self.runners.pop(hook_id) for hook_id in hook_ids if hook_id in self.runners]
        for runner, _task in stopping:
            runner.close()
        # A send stuck past its own timeout is cancelled and left behind: its events stay pending.
        await stop_tasks([task for _runner, task in stopping], _STOP_GRACE_S, what="hook runners", log=log,
                         cancel=False)  # fmt: skip

    # -- test deliveries -------------------------------------------------------------------

    async def _test_loop(self) -> None:
        key = hook_test_requests_key(self.settings.stream_prefix)
        tests: set[asyncio.Task] = set()
        outage = Outage(log, "Redis: wait for test requests")
        while True:
            try:
                popped = await self.redis.blpop([key], timeout=1)
            except Exception as exc:
                if not is_operational(exc, REDIS_TRANSIENT):
                    raise
                outage.failed(exc, "trying again every second")
                await asyncio.sleep(1)
                continue
            outage.recovered()
            if popped:
                task = asyncio.create_task(self._answer_test(_decode_request(popped[1])))
                tests.add(task)
                task.add_done_callback(tests.discard)

    async def _answer_test(self, request: TestRequest) -> None:
        if request.deadline and time.time() > request.deadline:
            return  # the API stopped waiting for it: sending now would answer no one
        async with self._test_slots:
            reply = await self.send_test(request.hook_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(request.reply_key, msgspec.json.encode(reply))
            pipe.expire(request.reply_key, 60)
            await pipe.execute()

    async def send_test(self, hook_id: int) -> TestReply:
        """One sample event through the hook's destination now, unless it is paused (failing is tested)."""
        assert self.pool is not None
        try:
            definition = await load_hook(self.pool, hook_id, self.box)
        except SecretKeyMissing as exc:
            log.error("hook %d: test not sent: %s", hook_id, exc)
            return TestReply(False, "the hook's secrets do not open (see the forwarder's log)", 0.0)
        if definition is None:
            return TestReply(False, f"hook {hook_id} does not exist", 0.0)
        if definition.state == "paused":
            return TestReply(False, "the hook is paused", 0.0)
        return await deliver_sample(definition, self.ids, self.policy, self.settings.forwarder.test_timeout_s)

    # -- support -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        await self._forget_dead_workers()
        await self.heartbeat.run()

    def _stalled_for(self) -> float:
        """The longest a runner has held entries without moving them (0: none is stuck)."""
        return most_stalled(runner.progress for runner, _task in list(self.runners.values()))

    def _heartbeat_facts(self) -> ForwarderHeartbeatFacts:
        return ForwarderHeartbeatFacts(consumer=self.consumer, pid=os.getpid(), at=time.time(),
                                       hooks=len(self.runners), delivered=self.delivered)  # fmt: skip

    def _publish(self, pipe: Pipeline) -> None:
        """With each heartbeat: the counts for the edge's /metrics, found through the workers set, gone with the TTL."""
        pipe.set(self.metrics_key, encode(self.metrics_snapshot()), ex=self.settings.forwarder.heartbeat_ttl_s)
        pipe.sadd(self.workers_key, self.consumer)

    @property
    def delivered(self) -> int:
        return sum(outcome.delivered for outcome in self.outcomes.values())

    def metrics_snapshot(self) -> ForwarderMetricsSnapshot:
        hooks = {}
        for hook_id, outcome in self.outcomes.items():
            running = self.runners.get(hook_id)
            hooks[str(hook_id)] = HookMetrics(
                delivered=outcome.delivered, deliveries=outcome.deliveries, failed_attempts=outcome.failed_attempts,
                dead_lettered=outcome.dead_lettered, send_seconds=outcome.send_seconds,
                state=running[0].definition.state if running else "stopped",
                failures_in_a_row=running[0].failures if running else 0,
            )  # fmt: skip
        return ForwarderMetricsSnapshot(consumer=self.consumer, at=time.time(), hooks=hooks)

    async def _forget_dead_workers(self) -> None:
        prefix, workers_key = self.settings.stream_prefix, self.workers_key
        with contextlib.suppress(*REDIS_TRANSIENT):
            names = [name.decode() for name in await self.redis.smembers(workers_key)]
            alive = await asyncio.gather(*(self.redis.exists(forwarder_heartbeat_key(prefix, n)) for n in names))
            dead = [name for name, up in zip(names, alive, strict=True) if not up and name != self.consumer]
            if dead:
                await self.redis.srem(workers_key, *dead)


    async def _helper(self, what: str, work: Awaitable[None]) -> None:
        """Run a helper task; a fatal error stops the worker, any other is logged where it ends the helper."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_fatal(exc):
                self._fail(exc)
                return
            log.exception("hooks worker: %s stopped on an unexpected error", what)
            raise


async def deliver_sample(definition: HookDefinition, ids: EventIds, policy: DestinationPolicy,
                         timeout_s: float) -> TestReply:  # fmt: skip
    """One sample event through the destination, within `timeout_s`.

    The reply says only the class of the answer ("2xx", "5xx", "connect failed"): the text
    of whatever answered stays out, and a refused connection reads like a timeout.
    """
    destination = open_destination(definition.destination, policy)
    event = sample_event(ids)
    started = time.perf_counter()
    try:
        delivery = Delivery(definition.id, f"{definition.id}-test-{event.id.hex()}", [event])
        answer, ok = await asyncio.wait_for(destination.send(delivery), timeout_s), True
    except DeliveryFailed as exc:
        answer, ok = exc.answer, False
        log.info("hook %d: test delivery failed: %s", definition.id, exc.detail)
    except TimeoutError:
        answer, ok = NO_ANSWER, False
    except Exception:  # the owner gets an answer rather than a 500; the operator the traceback
        log.exception("hook %d: test delivery raised", definition.id)
        answer, ok = "failed", False
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(destination.close(), _CLOSE_TIMEOUT_S)
    return TestReply(ok, answer, round((time.perf_counter() - started) * 1000, 1))
