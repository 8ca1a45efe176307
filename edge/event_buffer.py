"""Events collected in process and written to Redis streams in micro-batches.

`add` is synchronous and cheap: the HTTP response never waits for Redis. A
batch closes on count, bytes or age and is written with one pipeline holding
one append per shard, each entry a msgpack array of the batch's events for that
shard (a failed write is spooled whole; should Redis fail between two shards'
appends, the flusher's dedupe on event ids keeps the effect exactly once). Each
append also returns its stream's length: past `stream_max_len` the edge stops
adding to Redis (the flusher is far behind) and spools instead. Entries are not
bytes, so a watch task also reads Redis' INFO memory twice a second and spools
from `redis_memory_ratio` of its maxmemory on, before Redis refuses writes.

While Redis is down or full, batches go to the local spool; one recovery task
probes Redis, replays spool files in order, and switches back when the spool
is drained. Replay progress is kept in memory too, so a progress file that
cannot be saved (a full disk) never makes replay send the same records again.
Errors that repeat for every batch or probe are logged rate-limited
(edge.log_limit).

Longer than most modules: the write path, the recovery task and the memory
watch all decide the one `mode`, under one lock, and read best side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from edge.log_limit import LogLimiter
from edge.spool import Spool, adopt, discard
from tracker.config import Settings
from tracker.contract.events import PROFILE_AT, encode_batch, encode_event
from tracker.contract.keys import ENTRY_FIELD, event_streams, shard_for
from tracker.contract.spool_format import read_offset, read_records, write_offset
from tracker.streams.cluster import forget_slot_map, fullest_memory, is_cluster

log = logging.getLogger("edge.events")
_REPLAY_CHUNK = 1000
# Append one entry to a stream and say how long the stream is now.
_APPEND = "redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2]) return redis.call('XLEN', KEYS[1])"
_RECORD_BYTES = 128  # a generous estimate of one encoded pixel or click event
_MEMORY_CHECK_S = 0.5  # how often each worker reads Redis' INFO memory
_LOG_EVERY_S = 10.0  # at most one line per kind of repeated error this often


class _RedisFull(Exception):
    """Redis reached its memory ratio during a replay: stop, and wait for room."""


class NotReplicated(ResponseError):
    """WAIT saw fewer replicas than TRACKER_REDIS_WAIT_REPLICAS take a batch: it is spooled (and sent again)."""


class EventBuffer:
    def __init__(self, settings: Settings, redis: Redis, spool: Spool) -> None:
        self.redis = redis
        self.spool = spool
        self.streams = event_streams(settings.stream_prefix, settings.stream_shards)
        self.shards = settings.stream_shards
        self.max_events = settings.edge.batch_max_events
        self.max_bytes = settings.edge.batch_max_bytes
        self.max_age = settings.edge.batch_max_age_ms / 1000
        self.stream_max_len = settings.edge.stream_max_len
        self.retry_s = settings.edge.redis_retry_s
        self.memory_ratio = settings.edge.redis_memory_ratio
        # A batch is dropped from memory only once this many replicas hold it (WAIT); its wait is bounded
        # below the socket timeout, so a missing replica spools the batch rather than timing out the client.
        self.wait_replicas = settings.redis_wait_replicas
        self.wait_ms = max(1, int(settings.redis_timeout_s * 500))
        self.cluster = is_cluster(redis)
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._write_lock = asyncio.Lock()
        self._recovery: asyncio.Task | None = None
        self._memory_watch: asyncio.Task | None = None
        self._closing = False
        self._offsets: dict[Path, int] = {}  # replay progress per spool file, whether or not it could be saved
        self._limited = LogLimiter(log, _LOG_EVERY_S)
        # "redis": batches go to the streams; "spool": Redis is down or over its bound.
        self.mode = "redis"
        self.reason = ""
        self.redis_down = False  # the last write or probe failed to reach Redis
        self.redis_errors = 0
        self.memory_full = False  # Redis' used_memory was at or over memory_ratio of its maxmemory
        self.redis_memory = (0, 0)  # (used_memory, maxmemory) at the last check
        self.on_batch: Callable[[int, float], None] | None = None  # (events, seconds) of each stream write
        self.accepted = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.batches = 0

    # -- hot path -------------------------------------------------------------------------

    def add(self, record: tuple, size: int = _RECORD_BYTES) -> None:
        """Queue one event: an `Event`'s fields as a plain tuple, in field order.

        Encoding waits for the flush, where one msgspec call encodes a shard's
        whole batch; `size` is the caller's estimate of the encoded bytes.
        """
        self._pending.append(record)
        self._pending_bytes += size
        self.accepted += 1
        if len(self._pending) >= self.max_events or self._pending_bytes >= self.max_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_age, self.flush)

    def flush(self) -> None:
        """Close the current batch and start writing it (in the background)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing --------------------------------------------------------------------------

    async def start(self) -> None:
        # Spool files left by workers that died are replayed before this one's own.
        if self.spool.path.exists() or self.spool.orphans():
            self._enter_spool_mode("spool files from an earlier run")
        self._memory_watch = asyncio.get_running_loop().create_task(self._watch_memory())

    @property
    def closing(self) -> bool:
        return self._closing

    async def _write(self, batch: list[tuple]) -> None:
        try:
            await self._place(batch)
        except Exception as exc:  # a bug (Redis and disk failures are handled): count and say what was lost
            self.spool.dropped += len(batch)
            self._limited.log(
                logging.ERROR, "batch", "a batch of %d events was lost: %r (%d dropped in total)",
                len(batch), exc, self.spool.dropped,
            )  # fmt: skip

    async def _place(self, batch: list[tuple]) -> None:
        """Write a batch to Redis, or to the spool when Redis is down or over a bound."""
        shards = self.shards
        by_shard: dict[int, list[tuple]] = {}
        for record in batch:
            by_shard.setdefault(shard_for(record[PROFILE_AT], shards), []).append(record)
        async with self._write_lock:
            if self.mode == "redis":
                try:
                    started = time.perf_counter()
                    await self._xadd({shard: encode_event(records) for shard, records in by_shard.items()})
                    self.written += len(batch)
                    if self.on_batch is not None:
                        self.on_batch(len(batch), time.perf_counter() - started)
                    return
                except (RedisError, OSError) as exc:
                    self.redis_errors += 1
                    self.redis_down = not isinstance(exc, ResponseError)  # an OOM error comes from a live Redis
                    if self.cluster and self.redis_down:
                        await forget_slot_map(self.redis)  # a master may have moved: read the slot map again
                    self._enter_spool_mode(f"Redis write failed: {exc!r}")
            self._to_spool([(shard, encode_event(r)) for shard, records in by_shard.items() for r in records])

    async def _xadd(self, entries: dict[int, bytes], check_bound: bool = True) -> None:
        """An XADD per shard (its batch as one msgpack array), each returning the stream's length.

        Each shard's append is one script call: atomic for that stream, one command
        instead of MULTI/XADD/XLEN/EXEC (redis-py spends more per command than Redis
        does), and each call touches one hash slot, so it also works on Redis Cluster.

        With `wait_replicas`, a WAIT follows the appends on each connection that made them (on a
        cluster, one per master written to) and a batch that reached too few replicas is raised as
        `NotReplicated`, to be spooled: Redis replicates asynchronously, and a master that dies
        before its replica has an append loses it, after the edge has answered.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, entry in entries.items():
                # EVAL, not EVALSHA: the script is tiny, and a restarted Redis has no script cache.
                pipe.eval(_APPEND, 1, self.streams[shard], ENTRY_FIELD, entry)
            if self.wait_replicas:
                self._queue_waits(pipe, entries)
            replies = await pipe.execute()
        lengths, waits = replies[: len(entries)], replies[len(entries) :]
        if waits and min(waits) < self.wait_replicas:
            raise NotReplicated(f"a batch reached {min(waits)} of {self.wait_replicas} replicas within "
                                f"{self.wait_ms} ms")  # fmt: skip
        self.batches += 1
        longest = max(lengths)
        if check_bound and longest >= self.stream_max_len:
            self._enter_spool_mode(f"a stream holds {longest} entries (bound {self.stream_max_len})")

    def _queue_waits(self, pipe, entries: dict[int, bytes]) -> None:
        if not self.cluster:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
            return
        nodes = {}
        for shard in entries:
            node = self.redis.get_node_from_key(self.streams[shard])
            nodes[node.name] = node
        for node in nodes.values():  # after that node's appends, on the same connection
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms, target_nodes=node)

    def _to_spool(self, batch: list[tuple[int, bytes]]) -> None:
        spool = self.spool
        try:
            dropped = spool.append(batch)  # an OSError is counted and kept in `spool.error`
        except Exception as exc:  # not the disk: a bug. Still counted, said, and not fatal to the batch task.
            spool.dropped += len(batch)
            dropped = len(batch)
            spool.error = f"{type(exc).__name__}: {exc}"
        self.spooled += len(batch) - dropped
        if dropped and spool.error:
            self._limited.log(
                logging.ERROR, "spool-error", "spool %s: write failed (%s): %d events dropped, %d in total",
                spool.path, spool.error, dropped, spool.dropped,
            )  # fmt: skip
        elif dropped:
            self._limited.log(
                logging.ERROR, "spool-full", "spool %s is full (%d bytes): %d events dropped, %d in total",
                spool.path, spool.max_bytes, dropped, spool.dropped,
            )  # fmt: skip
        elif self._limited.active("spool-error"):
            self._limited.reset("spool-error", logging.WARNING, "spool %s: writes succeed again", spool.path)

    def _enter_spool_mode(self, reason: str) -> None:
        if self.mode != "spool":
            log.warning("spooling events to %s: %s; retrying Redis every %.1fs", self.spool.path, reason, self.retry_s)
        self.mode, self.reason = "spool", reason
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    # -- recovery -------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Probe Redis until it is back and below its bounds, then replay every spool file.

        Never ends on an error while the edge is spooling: a task that died here would
        leave the edge in spool mode for good.
        """
        while True:
            try:
                if await self._redis_has_room():
                    for orphan in self.spool.orphans():
                        await self._replay_file(orphan, own=False)
                    await self._replay_file(self.spool.path, own=True)
                    return
            except _RedisFull:
                self._limited.log(logging.INFO, "probe", "Redis memory back over its ratio: replay paused")
            except (RedisError, OSError) as exc:
                self._limited.log(
                    logging.WARNING, "replay", "spool replay interrupted: %r; next try in %.1fs", exc, self.retry_s
                )
            except Exception as exc:
                self._limited.log(
                    logging.ERROR, "replay", "spool replay failed: %r; next try in %.1fs", exc, self.retry_s
                )
            if self._closing:
                return
            self.spool.recheck()
            await asyncio.sleep(self.retry_s)

    async def _redis_has_room(self) -> bool:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in self.streams:
                    pipe.xlen(stream)
                lengths = await pipe.execute()
            memory = await fullest_memory(self.redis)  # on a cluster, of the master closest to its maxmemory
        except (RedisError, OSError) as exc:
            self.redis_down = True
            if self.cluster:
                await forget_slot_map(self.redis)
            self._limited.log(
                logging.INFO, "probe", "Redis still unreachable (%r); next try in %.1fs", exc, self.retry_s
            )
            return False
        self.redis_down = False
        # Hysteresis: resume only well below the bound, so the edge does not flap.
        if max(lengths) >= self.stream_max_len * 0.9:
            self._limited.log(
                logging.INFO, "probe", "streams still near their bound (%d entries); next try in %.1fs",
                max(lengths), self.retry_s,
            )  # fmt: skip
            return False
        if self._memory_seen(memory):
            used, limit = self.redis_memory
            self._limited.log(
                logging.INFO, "probe", "Redis memory still at %d of %d bytes (ratio %.2f); next try in %.1fs",
                used, limit, self.memory_ratio, self.retry_s,
            )  # fmt: skip
            return False
        self._limited.reset("probe")
        return True

    # -- Redis' memory ----------------------------------------------------------------------

    async def _watch_memory(self) -> None:
        """Spool before Redis refuses writes: its stream bound counts entries, not bytes."""
        while not self._closing:
            try:
                self._memory_seen(await fullest_memory(self.redis))
            except (RedisError, OSError):
                pass  # unreachable: the writes and the recovery probe find out and say so
            except Exception as exc:
                self._limited.log(logging.ERROR, "memory", "reading Redis' INFO memory failed: %r", exc)
            await asyncio.sleep(_MEMORY_CHECK_S)

    def _memory_seen(self, info: dict) -> bool:
        """Take an INFO memory reply; True if Redis is at or over its ratio (spool mode, if not in it yet)."""
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        self.redis_memory = (used, limit)
        full = limit > 0 and used >= limit * self.memory_ratio
        if full != self.memory_full:
            self.memory_full = full
            log.warning(
                "Redis memory %s its ratio: %d of maxmemory %d bytes (TRACKER_REDIS_MEMORY_RATIO %.2f)",
                "at" if full else "back under", used, limit, self.memory_ratio,
            )  # fmt: skip
        if full and self.mode == "redis":
            self._enter_spool_mode(f"Redis memory at {used} of maxmemory {limit} bytes (ratio {self.memory_ratio})")
        return full

    async def _replay_file(self, path: Path, own: bool) -> None:
        if not own:
            # Hold the dead worker's lock while replaying, so no other worker replays it too.
            with adopt(path) as adopted:
                if adopted:
                    await self._replay_records(path)
                    self._discard(path, discard)
            return
        while await self._replay_records(path):
            pass  # new batches may have been spooled while replaying
        # Caught up: switch back under the write lock so that no batch slips in between.
        async with self._write_lock:
            while await self._replay_records(path):
                pass  # what was spooled since the loop above
            done = self._offsets.get(path, 0)
            if done < self.spool.size:
                log.error("spool %s: unreadable tail of %d bytes discarded", path, self.spool.size - done)
            full = self.spool.full
            self._discard(path, lambda _path: self.spool.remove())
            self.mode, self.reason = "redis", ""
            if full:
                self._limited.reset("spool-full", logging.WARNING, "spool %s replayed: it has room again", path)
            self._limited.reset("replay")
            self._limited.reset("offset")
            log.warning("Redis takes writes again: spool replayed (%d events in total)", self.replayed)

    def _discard(self, path: Path, remove: Callable[[Path], None]) -> None:
        """Remove a replayed spool file; if it cannot be, its progress stays in memory (nothing is re-sent)."""
        try:
            remove(path)
        except OSError as exc:
            self._limited.log(logging.ERROR, "discard", "spool %s replayed but not removed: %r", path, exc)
            return
        self._offsets.pop(path, None)

    async def _replay_records(self, path: Path) -> bool:
        """Replay what is readable past the offset reached; True if anything was sent."""
        if not path.exists():
            return False
        progressed = False
        start = max(self._offsets.get(path, 0), read_offset(path))
        self._offsets[path] = start
        for chunk, next_offset in read_records(path, start, _REPLAY_CHUNK):
            if self.memory_full:
                raise _RedisFull
            await self._xadd_replayed(chunk)
            self._offsets[path] = next_offset
            try:
                write_offset(path, next_offset)
            except OSError as exc:
                self._limited.log(
                    logging.WARNING, "offset", "spool %s: replay progress not saved (%r); kept in memory, so only "
                    "a crash re-sends what was replayed since (the flusher drops duplicate ids)", path, exc,
                )  # fmt: skip
            progressed = True
        return progressed

    async def _xadd_replayed(self, chunk: list[tuple[int, bytes]]) -> None:
        by_shard: dict[int, list[bytes]] = {}
        for shard, payload in chunk:
            by_shard.setdefault(shard % self.shards, []).append(payload)
        await self._xadd({shard: encode_batch(payloads) for shard, payloads in by_shard.items()}, check_bound=False)
        self.replayed += len(chunk)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered; whatever Redis does not take goes to the spool."""
        self._closing = True
        if self._memory_watch is not None:
            self._memory_watch.cancel()
        self.flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        if self._recovery is not None and not self._recovery.done():
            try:
                await asyncio.wait_for(self._recovery, timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass
        self.spool.close()

    def state(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "spool_bytes": self.spool.size,
            "spool_max_bytes": self.spool.max_bytes,
            "spool_writable": self.spool.writable,
            "spool_full": self.spool.full,
            "spool_error": self.spool.error,
            "spool_dropped": self.spool.dropped,
            "redis_memory_full": self.memory_full,
            "redis_used_memory": self.redis_memory[0],
            "redis_maxmemory": self.redis_memory[1],
            "accepted": self.accepted,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "at": time.time(),
        }
