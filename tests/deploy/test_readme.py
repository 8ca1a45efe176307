"""The README's two commands, and CI running the second one as a stranger would (a scrubbed environment)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    blocks = re.findall(r"^```\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S | re.M)
    return [line for block in blocks[:2] for line in block.splitlines() if line.strip()]


def test_the_readme_opens_with_a_run_command_and_a_test_command() -> None:
    run, test = readme_commands()[:2]
    assert run.endswith("tracker run") and "pip install" in run
    assert test.endswith("pytest -q") and "'.[test]'" in test


def test_ci_runs_the_readmes_test_command_word_for_word_in_a_scrubbed_environment() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test = readme_commands()[1]
    assert f"\n{test}\n" in ci
    scrubbed = re.search(r"env -i ([^\n]*)", ci.replace("\\\n", " "))  # continuation lines joined
    assert scrubbed, "CI does not run the tests under env -i"
    passed = set(re.findall(r"\b([A-Z_]+)=", scrubbed.group(1)))
    # Nothing a stranger's shell lacks: no PYTHONUNBUFFERED, no TRACKER_* or test-only variables.
    assert passed == {"PATH", "HOME", "LANG", "REDIS_URL", "DATABASE_URL", "AMQP_URL"}


def test_every_test_has_a_time_limit() -> None:
    assert re.search(r"^timeout = \d+$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert '"pytest-timeout' in (ROOT / "pyproject.toml").read_text()
