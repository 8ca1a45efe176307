"""A local append-only spool for events the edge cannot put on Redis right now.

Each Granian worker appends to its own file and holds an exclusive lock on it,
so a worker that finds an unlocked spool file knows its writer is gone and may
replay it. The file format (naming, record framing, the offset file, the lock
probe) is in tracker.contract.spool_format, which `tracker stats` reads too.
Replay progress is saved after each chunk, so a crash during replay re-sends at
most one chunk (the flusher dedupes by id).

A write that fails (ENOSPC, EIO, a short write, a failed fsync) is cut off the
file again (truncated back to where its first record starts), so no torn record
is left for the records after it, and every event in it counts in `dropped`, as
do events refused for lack of room. `writable` says whether the spool can take
events now: the edge is not ready for traffic while it is spooling and cannot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tracker.contract.spool_format import HEADER, SPOOL_GLOB, frame_header, holds_lock, offset_path, spool_path

_FREE_TO_RETRY = 1 << 20  # free disk bytes from which a spool that failed for lack of space is tried again


class Spool:
    """This worker's spool file; `append` never blocks on the network."""

    def __init__(self, directory: Path, max_bytes: int, fsync: str) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync_policy = fsync
        self.path = spool_path(self.directory, os.getpid())
        self._fd: int | None = None
        self._size = 0
        self._last_sync = 0.0
        self._torn = False  # a failed write could not be cut off: the file is not appended to until it is
        self.dropped = 0  # events refused: the spool was full, or its write failed
        self.full = False  # events were refused for lack of room (until the file is replayed and removed)
        self.error = ""  # the last write's failure, "" once a write succeeds again
        self._error_no = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def writable(self) -> bool:
        """Whether the spool can take events now: it has room and its last write did not fail."""
        return not self.full and not self.error

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._size = os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def append(self, records: list[tuple[int, bytes]]) -> int:
        """Write (shard, payload) records; return how many were dropped (no room, or the write failed).

        Never raises for an OSError: a failed write drops (and counts) all of the
        records it held and sets `error`.
        """
        try:
            fd = self._open()
        except OSError as exc:
            self._failed(exc)
            self.dropped += len(records)
            return len(records)
        frames = []
        room = self.max_bytes - self._size
        dropped = 0
        for shard, payload in records:
            size = HEADER.size + len(payload)
            if size > room:
                dropped += 1
                continue
            room -= size
            frames.append(frame_header(payload, shard))
            frames.append(payload)
        if dropped:
            self.full = True
        if frames:
            try:
                self._write(fd, b"".join(frames))
                self.error, self._error_no = "", 0
            except OSError as exc:
                self._failed(exc)
                dropped += len(frames) // 2
        self.dropped += dropped
        return dropped

    def _write(self, fd: int, data: bytes) -> None:
        """Append `data` whole and fsync per the policy, or leave the file as it was and raise OSError."""
        start = self._size
        if self._torn:
            self._cut(fd, start)  # the last failure's tail is still there
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, f"short write: {len(data) - len(view)} of {len(data)} bytes")
                view = view[written:]
            now = time.monotonic()
            if self.fsync_policy == "always" or (self.fsync_policy == "interval" and now - self._last_sync >= 1.0):
                os.fsync(fd)
                self._last_sync = now
        except OSError:
            self._torn = True
            with contextlib.suppress(OSError):
                self._cut(fd, start)
            raise
        self._size = start + len(data)

    def _cut(self, fd: int, size: int) -> None:
        """Truncate the file back to `size` bytes (the end of its last whole record)."""
        os.ftruncate(fd, size)
        self._torn = False

    def recheck(self) -> None:
        """Forget a write that failed for lack of disk space once the file system has room again.

        Without it, a worker that no longer gets traffic (not ready) would never find out.
        Other failures (EIO, ...) stand until a write succeeds or the file is replayed.
        """
        if self._error_no not in (errno.ENOSPC, errno.EDQUOT):
            return
        try:
            fs = os.statvfs(self.directory)
        except OSError:
            return
        if fs.f_bavail * fs.f_frsize >= min(_FREE_TO_RETRY, self.max_bytes - self._size) and fs.f_favail != 0:
            self.error, self._error_no = "", 0

    def sync(self) -> None:
        if self._fd is not None and self.fsync_policy != "never":
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._failed(exc)

    def remove(self) -> None:
        """Delete the file once everything in it has been replayed (OSError if it cannot be unlinked)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._size = 0  # read again from the file by the next append, should the unlink fail
        self._torn = False
        self.full = False
        self.error, self._error_no = "", 0
        discard(self.path)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def _failed(self, exc: OSError) -> None:
        self.error, self._error_no = f"{type(exc).__name__}: {exc}", exc.errno or 0

    def orphans(self) -> list[Path]:
        """Spool files of workers that are gone (their lock is free), oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(SPOOL_GLOB), key=lambda p: p.stat().st_mtime):
            # Not held and still there; `adopt` takes the lock for good before replaying.
            if path != self.path and holds_lock(path) is False:
                found.append(path)
        return found


@contextlib.contextmanager
def adopt(path: Path) -> Iterator[bool]:
    """Lock a dead worker's spool file for replay; yields False if someone holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def discard(path: Path) -> None:
    # The offset first: a spool file left without it is replayed again (duplicates, which the flusher
    # drops), while an offset left without its file would make a later file of that name skip records.
    offset_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
