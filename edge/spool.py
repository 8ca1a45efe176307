"""A local append-only spool for events the edge cannot put on Redis right now.

Each Granian worker appends to its own file (`edge-<pid>.spool`) and holds an
exclusive lock on it, so a worker that finds an unlocked spool file knows its
writer is gone and may replay it. Records are framed as

    u32 length | u32 crc32 | u16 shard | payload (one msgpack Event)

A torn record at the end (crash mid-write) fails its length or CRC check and
ends the replay of that file. Replay progress is kept in `<file>.offset`, so a
crash during replay re-sends at most one chunk (the flusher dedupes by id).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("edge.spool")

_HEADER = struct.Struct(">IIH")
_MAX_RECORD = 16 * 2**20


class Spool:
    """This worker's spool file; `append` never blocks on the network."""

    def __init__(self, directory: Path, max_bytes: int, fsync: str) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync_policy = fsync
        self.path = self.directory / f"edge-{os.getpid()}.spool"
        self._fd: int | None = None
        self._size = 0
        self._last_sync = 0.0
        self.dropped = 0  # events refused because the spool was full

    @property
    def size(self) -> int:
        return self._size

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd = fd
            self._size = os.fstat(fd).st_size
        return self._fd

    def append(self, records: list[tuple[int, bytes]]) -> int:
        """Write (shard, payload) records; return how many were dropped for lack of room."""
        fd = self._open()
        frames = []
        room = self.max_bytes - self._size
        dropped = 0
        for shard, payload in records:
            size = _HEADER.size + len(payload)
            if size > room:
                dropped += 1
                continue
            room -= size
            frames.append(_HEADER.pack(len(payload), zlib.crc32(payload), shard))
            frames.append(payload)
        if frames:
            data = b"".join(frames)
            os.write(fd, data)
            self._size += len(data)
            now = time.monotonic()
            if self.fsync_policy == "always" or (self.fsync_policy == "interval" and now - self._last_sync >= 1.0):
                os.fsync(fd)
                self._last_sync = now
        self.dropped += dropped
        return dropped

    def sync(self) -> None:
        if self._fd is not None and self.fsync_policy != "never":
            os.fsync(self._fd)

    def remove(self) -> None:
        """Delete the file once everything in it has been replayed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        discard(self.path)
        self._size = 0

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def orphans(self) -> list[Path]:
        """Spool files of workers that are gone (their lock is free), oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("edge-*.spool"), key=lambda p: p.stat().st_mtime):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.close(fd)  # releases the probe lock; adopt_orphan takes it for good
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
    path.unlink(missing_ok=True)
    offset_path(path).unlink(missing_ok=True)


def offset_path(path: Path) -> Path:
    return path.with_suffix(".offset")


def read_offset(path: Path) -> int:
    try:
        return int(offset_path(path).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    tmp = offset_path(path).with_suffix(".offset.tmp")
    tmp.write_text(str(offset))
    os.replace(tmp, offset_path(path))


def read_records(path: Path, offset: int, max_records: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Yield (records, offset after them) chunks from `offset` to the last whole record."""
    with open(path, "rb") as f:
        f.seek(offset)
        chunk: list[tuple[int, bytes]] = []
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            length, crc, shard = _HEADER.unpack(header)
            payload = f.read(length) if length <= _MAX_RECORD else b""
            if len(payload) != length or zlib.crc32(payload) != crc:
                log.error("spool %s: torn or corrupt record at byte %d; the rest is skipped", path, offset)
                break
            offset += _HEADER.size + length
            chunk.append((shard, payload))
            if len(chunk) >= max_records:
                yield chunk, offset
                chunk = []
        if chunk:
            yield chunk, offset
