"""The edge's spool files: what the edge that writes them and the ops view that reads them agree on.

Each edge worker appends to its own file in TRACKER_SPOOL_DIR, named by its pid
(`edge-<pid>.spool`), and holds an exclusive flock() on it while it writes or
replays it, so a file nobody holds belongs to a worker that is gone. Records are
framed as

    u32 length | u32 crc32 | u16 shard | payload (one msgpack Event)

big-endian. A torn record at the end (crash mid-write) fails its length or CRC
check and ends the reading of that file. Replay progress, in bytes, is kept in
`<name>.offset` beside the file, written whole (temp file, then rename). An edge
that cannot save it (a full disk) keeps its progress in memory, so a lost offset
only makes a crash re-send what was replayed since the last save.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("edge.spool")  # only edge workers read records back

SPOOL_GLOB = "edge-*.spool"
HEADER = struct.Struct(">IIH")  # length, crc32 of the payload, shard
MAX_RECORD = 16 * 2**20  # a longer length field is corruption


def spool_path(directory: Path, pid: int) -> Path:
    return directory / f"edge-{pid}.spool"


def frame_header(payload: bytes, shard: int) -> bytes:
    """The header that goes before `payload` in the file."""
    return HEADER.pack(len(payload), zlib.crc32(payload), shard)


def read_records(path: Path, offset: int, max_records: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Yield ((shard, payload) records, offset after them) chunks from `offset` to the last whole record."""
    with open(path, "rb") as f:
        f.seek(offset)
        chunk: list[tuple[int, bytes]] = []
        while True:
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                break
            length, crc, shard = HEADER.unpack(header)
            payload = f.read(length) if length <= MAX_RECORD else b""
            if len(payload) != length or zlib.crc32(payload) != crc:
                log.error("spool %s: torn or corrupt record at byte %d; the rest is skipped", path, offset)
                break
            offset += HEADER.size + length
            chunk.append((shard, payload))
            if len(chunk) >= max_records:
                yield chunk, offset
                chunk = []
        if chunk:
            yield chunk, offset


# -- replay progress --------------------------------------------------------------------


def offset_path(path: Path) -> Path:
    return path.with_suffix(".offset")


def read_offset(path: Path) -> int:
    """Bytes of `path` already replayed (0: none, or no offset file)."""
    try:
        return int(offset_path(path).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    """Save replay progress whole, or raise OSError and leave the saved one as it was (and no temp file)."""
    tmp = offset_path(path).with_suffix(".offset.tmp")
    try:
        tmp.write_text(str(offset))
        os.replace(tmp, offset_path(path))
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# -- is a live edge worker holding it? ----------------------------------------------------


def holds_lock(path: Path) -> bool | None:
    """True if a live process holds the file's flock (an edge worker writing or replaying it),
    False if nobody does, None if the file is gone.

    The probe takes the lock for an instant, so it can make an edge worker's own
    non-blocking lock fail at that moment: a reader that only looks should use
    `lock_holders` where it can.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got it


def lock_holders() -> dict[tuple[int, int, int], int] | None:
    """{(device major, device minor, inode): pid} of the flock() locks on this host, from /proc/locks
    (None off Linux). Reading it takes no lock: nothing an edge worker does can be disturbed."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    holders = {}
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:5341503 0 EOF"; waiters have "->" after the number.
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        major, minor, inode = parts[5].split(":")
        holders[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
    return holders


def holder_of(info: os.stat_result, holders: dict[tuple[int, int, int], int]) -> int | None:
    """The pid holding the flock of the file `info` describes, from `lock_holders()`."""
    return holders.get((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino))
