"""The spool on a failing disk: every lost event counted, no torn record, no replay sent twice.

The full-disk test puts the spool on a real 64 KiB tmpfs (root and `mount`
needed, skipped otherwise). Short writes, I/O errors and failed fsync or
truncate calls cannot be made to happen on demand, so those tests replace the
`os` calls of the file system, and only those: Redis is always a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis

from edge.log_limit import LogLimiter
from edge.spool import Spool
from tests.edge.test_edge_outage import opens, wait_until
from tests.rigs.edge_helpers import running_edge, stream_events, wait_for_events
from tracker.contract.events import Event, EventIds, encode_event
from tracker.contract.spool_format import offset_path, read_records
from tracker.domain.link_tables import create_message
from tracker.ops.embedded import EmbeddedRedis

_IDS = EventIds()


def some_records(count: int, first_profile: int = 0) -> list[tuple[int, bytes]]:
    profiles = range(first_profile, first_profile + count)
    events = [Event(_IDS.new(), "opened", "email", 1, p, 1_700_000_000_000_000) for p in profiles]
    return [(e.profile_id % 4, encode_event(e)) for e in events]


def read_back(path: Path) -> tuple[list[tuple[int, bytes]], int]:
    """Every record of a spool file, and the offset after the last one."""
    records: list[tuple[int, bytes]] = []
    end = 0
    for chunk, after in read_records(path, 0, 10**6):
        records += chunk
        end = after
    return records, end


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 64 KiB tmpfs; skipped where it cannot be mounted (not root, no mount, a container without the right)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_disk_counts_every_lost_event_and_replays_the_rest_once(
    settings, pg, tmp_path, free_port, tiny_disk, caplog
) -> None:
    settings = settings.replace(
        redis_url=f"redis://127.0.0.1:{free_port}/0",
        redis_timeout_s=0.2,
        edge={"spool_dir": tiny_disk / "spool", "batch_max_events": 20},
    )
    message_id, _ = await create_message(pg, "email", "full-disk", [])
    caplog.set_level(logging.INFO)
    sent = 1500  # about twice what 64 KiB holds
    server = EmbeddedRedis(tmp_path / "redis", port=free_port, persist=False)
    try:
        async with running_edge(settings) as (app, http):
            events, spool = app.state.events, app.state.spool
            for path in opens(settings, message_id, range(sent)):
                assert (await http.get(path)).status_code == 200
            await wait_until(lambda: events.spooled + spool.dropped == sent, what="every event spooled or counted")
            assert events.mode == "spool"
            assert events.spooled > 0 and spool.dropped > 0
            assert "No space left" in spool.error
            # No torn record: the file reads whole, to its last byte, and holds exactly what was spooled.
            records, end = read_back(spool.path)
            assert len(records) == events.spooled
            assert end == spool.size == spool.path.stat().st_size
            ready = await http.get("/ready")
            assert ready.status_code == 503 and "No space left" in ready.json()["problems"][0]
            errors = [m for m in caplog.messages if m.startswith("spool ") and "write failed" in m]
            assert len(errors) == 1  # rate-limited: one line for dozens of failed batches

            # Redis is back. The replay progress cannot be saved on the full disk: kept in memory instead.
            server.start()
            await wait_until(lambda: events.mode == "redis", what="back to Redis")
            assert not spool.path.exists() and not offset_path(spool.path).exists()
            assert (await http.get("/ready")).status_code == 200
            for path in opens(settings, message_id, range(sent, sent + 10)):
                assert (await http.get(path)).status_code == 200
            client = Redis.from_url(server.url)
            try:
                await wait_for_events(client, settings, events.spooled + 10)
                await asyncio.sleep(0.3)  # a few probe intervals more: nothing is sent again
                stored = await stream_events(client, settings)
            finally:
                await client.aclose()
            assert events.replayed == events.spooled
            spooled, dropped = events.spooled, spool.dropped
    finally:
        server.stop()
    assert any("replay progress not saved" in r.getMessage() for r in caplog.records)
    ids = [e.id for e in stored]
    assert len(ids) == len(set(ids)) == spooled + 10  # each spooled event once: no chunk re-sent
    assert spooled + dropped == sent


@contextlib.contextmanager
def failing_file_system(monkeypatch, spool: Spool, **calls):
    """Replace os.write/fsync/ftruncate for the spool's own file descriptor only."""
    with monkeypatch.context() as patch:
        for name, fake in calls.items():
            real = getattr(os, name)

            def call(fd, *args, _real=real, _fake=fake):
                return _fake(_real, fd, *args) if fd == spool._fd else _real(fd, *args)

            patch.setattr(os, name, call)
        yield


class ShortThenFull:
    """Half the bytes reach the file, then the disk is full (what a short write means for a file)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, real, fd, data):
        self.calls += 1
        if self.calls == 1:
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def io_error(real, fd, *args):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_failed_writes_are_cut_off_and_counted_and_the_file_replays_cleanly(tmp_path, monkeypatch) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20, "always")
    first, last = some_records(5), some_records(6, 100)
    assert spool.append(first) == 0
    good_size = spool.size

    with failing_file_system(monkeypatch, spool, write=ShortThenFull()):
        assert spool.append(some_records(7)) == 7
    assert "No space left" in spool.error and not spool.writable
    assert spool.size == good_size == spool.path.stat().st_size  # the half record was cut off

    with failing_file_system(monkeypatch, spool, write=io_error):
        assert spool.append(some_records(3)) == 3
    assert "Input/output error" in spool.error

    with failing_file_system(monkeypatch, spool, fsync=io_error):
        assert spool.append(some_records(4)) == 4  # written, but not known to be on disk: counted as lost
    assert spool.path.stat().st_size == good_size

    # The cut itself fails: the torn tail stays until the next write cuts it off first.
    with failing_file_system(monkeypatch, spool, write=ShortThenFull(), ftruncate=io_error):
        assert spool.append(some_records(8)) == 8
    assert spool.path.stat().st_size > good_size == spool.size

    assert spool.append(last) == 0
    assert spool.error == "" and spool.writable
    assert spool.dropped == 7 + 3 + 4 + 8
    records, end = read_back(spool.path)
    assert records == first + last
    assert end == spool.size == spool.path.stat().st_size
    spool.close()


def test_a_spool_that_cannot_be_opened_counts_its_events(tmp_path) -> None:
    (tmp_path / "spool").write_text("a file where the folder should be")
    spool = Spool(tmp_path / "spool", 1 << 20, "interval")
    assert spool.append(some_records(9)) == 9
    assert spool.dropped == 9 and spool.error and not spool.writable


async def test_a_failing_offset_save_does_not_resend_the_replayed_chunks(settings, redis) -> None:
    settings.edge.spool_dir.mkdir(parents=True)
    dead = Spool(settings.edge.spool_dir, 1 << 24, "never")
    dead.path = settings.edge.spool_dir / "edge-999999999.spool"
    records = some_records(2500)  # three replay chunks
    assert dead.append(records) == 0
    dead.close()
    # Where the progress file is written first, a folder: every save fails, as on a full disk.
    offset_path(dead.path).with_suffix(".offset.tmp").mkdir()

    async with running_edge(settings) as (app, _http):
        await wait_until(lambda: app.state.events.mode == "redis", what="orphan replayed")
        found = await wait_for_events(redis, settings, 2500)
        await wait_until(lambda: app.state.events.replayed == 2500, what="replay counted")
        await asyncio.sleep(0.35)  # a few probe intervals more: nothing is sent again
    again = await stream_events(redis, settings)
    assert len(found) == len(again) == 2500
    assert len({e.id for e in again}) == 2500
    assert not dead.path.exists()


def test_log_limiter_says_once_then_counts_what_it_left_out(caplog) -> None:
    caplog.set_level(logging.INFO)
    limited = LogLimiter(logging.getLogger("test.limit"), every_s=3600)
    for n in range(50):
        limited.log(logging.ERROR, "full", "spool full: %d", n)
    limited.log(logging.ERROR, "other", "another kind")
    limited.reset("full", logging.WARNING, "spool has room again")
    limited.log(logging.ERROR, "full", "spool full: %d", 50)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.limit"]
    assert lines == [
        "spool full: 0",
        "another kind",
        "spool has room again (49 more lines of it were not logged)",
        "spool full: 50",
    ]
