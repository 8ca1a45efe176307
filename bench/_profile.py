"""Where an edge worker spends its time under load: py-spy raw stacks, summarised by function.

Only the thread holding the GIL is sampled (`--gil`): that is the Python work the
worker's one core has to do per request. Time in Granian's Rust I/O thread and
in the kernel does not show here (py-spy `--native` shows part of it).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from bench._procs import Server

# Frames every sample shares (process start-up, Granian's worker bootstrap): no information.
_BOOTSTRAP = ("multiprocessing/", "granian/server/", "edge/serve.py", "(edge)")
# Samples that stop at the worker's run-loop frame are in uvloop's or Granian's native code, GIL held.
_LOOP_FRAME = "MPServer._spawn_asgi_lifespan_worker"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def busiest_worker(server: Server) -> int:
    """The descendant with the most CPU time: the Granian worker that served the load."""

    def cpu(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return -1

    candidates = server.descendants() or [server.pid]
    return max(candidates, key=cpu)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.replace(str(Path.cwd()) + "/", "")
    return f"{match['func']} ({path})"


def summarise(raw: str, top: int = 15) -> dict:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own["(native: uvloop / Granian / C calls, GIL held)" if leaf.startswith(_LOOP_FRAME) else leaf] += count
        for frame in set(frames):
            if not any(marker in frame for marker in _BOOTSTRAP):
                inclusive[frame] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [(name, round(n / total, 4)) for name, n in own.most_common(top)],
        "inclusive": [(name, round(n / total, 4)) for name, n in inclusive.most_common(top)],
    }


def render(summary: dict) -> str:
    if not summary["samples"]:
        return "  (no samples)"
    lines = [f"  {summary['samples']} samples of the worker thread holding the GIL (py-spy --gil; idle not sampled)"]
    for title, key in (("self time", "self"), ("inclusive time", "inclusive")):
        lines.append(f"  top by {title}:")
        lines += [f"    {share:6.1%}  {name}" for name, share in summary[key]]
    return "\n".join(lines)


def profile_under_load(
    edge: Server, seconds: float, raw_path: Path, *, pin: list[str], load: Callable[[float], object], load_name: str
) -> dict:
    """py-spy on the busiest edge worker for `seconds` while `load(seconds)` drives it (`pin`: py-spy's taskset)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return {"top": {}, "text": "  py-spy is not installed (pip install -e '.[bench]')"}
    pid = busiest_worker(edge)
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        *pin, py_spy, "record", "--pid", str(pid), "--format", "raw",
        "--rate", "250", "--duration", str(int(seconds)), "--gil", "--nonblocking", "-o", str(raw_path),
    ]  # fmt: skip
    print(f"bench: py-spy on edge worker {pid} for {seconds:g}s ({load_name})", flush=True)
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # wrk runs a little longer than the recording, so every sample is taken under load.
    driver = threading.Thread(target=load, args=(seconds + 2,))
    driver.start()
    _, errors = recorder.communicate(timeout=seconds + 60)
    driver.join()
    if recorder.returncode != 0 or not raw_path.exists():
        return {"top": {}, "text": f"  py-spy failed ({recorder.returncode}): {errors.strip()[-500:]}"}
    summary = summarise(raw_path.read_text())
    return {"top": summary, "text": render(summary) + f"\n  raw stacks: {raw_path}"}
