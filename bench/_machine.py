"""What a bench run ran on: the machine, the tool versions and the commit, for the report and the JSON."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from bench import _services
from bench._args import REPO


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": metadata.version("granian"),
        "nginx": _services.tool_version(["nginx", "-v"]),
        "wrk": _services.tool_version(["wrk", "-v"]).split(" Copyright")[0],
        "load_avg_at_end": os.getloadavg(),
        "commit": code_version(),
    }


def code_version() -> str:
    """The commit under test, marked when edge/ or tracker/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edge", "tracker"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + (" (edge/ or tracker/ modified)" if dirty.stdout.strip() else "")
