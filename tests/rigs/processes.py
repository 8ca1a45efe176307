"""Reading a child program's output as it comes, never without a deadline."""

from __future__ import annotations

import os
import selectors
import subprocess
import time


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> bool:
    """Read `process`'s stdout until a line starts with `marker` (True), it ends, or `timeout` passes.

    Reads the pipe's descriptor itself: a file object's own buffer would hold lines the selector cannot see.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return False  # it exited
            *lines, pending = (pending + chunk).split(b"\n")
            if any(line.startswith(marker.encode()) for line in lines):
                return True
    return False
