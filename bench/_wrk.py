"""Driving a target with wrk: a Lua script that rotates over many paths and reports in microseconds."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

# Requests are formatted once per path in init(), so the per-request cost in wrk
# is a table lookup: the load tool stays as cheap as it can for every target.
# done() prints exact figures (µs, counts) instead of wrk's rounded text.
ROTATE_LUA = r"""
local requests = {}
local count = 0
local next_index = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for path in file:lines() do
    if #path > 0 then
      count = count + 1
      requests[count] = wrk.format("GET", path)
    end
  end
  file:close()
  -- Each wrk thread starts at a different place in the list.
  next_index = math.random(count) - 1
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("BENCH mean_us=%.1f stdev_us=%.1f max_us=%d\n", latency.mean, latency.stdev, latency.max))
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    io.write(string.format("BENCH p%s_us=%d\n", (tostring(p):gsub("%.", "_")), latency:percentile(p)))
  end
end
"""

_FIELD = re.compile(r"(\w+)=([0-9.]+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_us: int
    p75_us: int
    p90_us: int
    p99_us: int
    p99_9_us: int
    mean_us: float
    max_us: int
    errors: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    return wrk


def write_script(folder: Path) -> Path:
    path = folder / "rotate.lua"
    path.write_text(ROTATE_LUA)
    return path


def parse(output: str) -> WrkResult:
    fields: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("BENCH "):
            fields.update((key, float(value)) for key, value in _FIELD.findall(line))
    if "requests" not in fields or "p50_us" not in fields:
        raise ValueError(f"no BENCH lines in wrk output:\n{output}")
    duration = fields["duration_us"] / 1e6
    return WrkResult(
        requests=int(fields["requests"]),
        duration_s=duration,
        rps=fields["requests"] / duration if duration else 0.0,
        p50_us=int(fields["p50_us"]),
        p75_us=int(fields["p75_us"]),
        p90_us=int(fields["p90_us"]),
        p99_us=int(fields["p99_us"]),
        p99_9_us=int(fields["p99_9_us"]),
        mean_us=fields["mean_us"],
        max_us=int(fields["max_us"]),
        errors={k: int(fields[k]) for k in ("connect", "read", "write", "status", "timeout")},
    )


def run(
    url: str,
    script: Path,
    paths_file: Path,
    connections: int,
    seconds: float,
    threads: int = 1,
    pin: list[str] | None = None,
) -> tuple[WrkResult, str]:
    """One wrk run; returns the parsed result and wrk's full output."""
    argv = [
        *(pin or []), find_wrk(),
        f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s",
        "-s", str(script), url, "--", str(paths_file),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout), done.stdout
