"""Exit codes, the same for every command: `edge`, `flusher`, `forwarder` (`hooks`) and `tracker`."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the work failed; a probe (`--check`, `tracker stats`) found no live process or no Redis
    USAGE = 2  # bad arguments or settings


EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE
EXIT_UNREACHABLE = ExitCode.FAILED  # `tracker stats`: Redis did not answer
