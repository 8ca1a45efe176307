"""`python -m tracker.config`: the settings table of the README, made from the code.

`--check README.md` exits 1 when the README's table differs (the test suite runs it);
`--write README.md` puts the current table between the README's markers.
With `--env-example` the same from the same settings for `deploy/env.example`, the
whole file: every variable with its default (tracker/config/_env_example.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracker.config import Settings

BEGIN = "<!-- settings table: made by `python -m tracker.config --write README.md` -->"
END = "<!-- end of settings table -->"
_TITLES = {
    "": "Shared by every program",
    "edge": "Edge (`edge`, and the API it serves)",
    "reports": "Provider reports (served by the edge)",
    "pages": "Recipient pages (unsubscribe, confirm, preferences; served by the edge)",
    "flusher": "Flusher (`flusher`)",
    "forwarder": "Action-hook forwarder (`forwarder`)",
}


def table() -> str:
    out: list[str] = []
    current = None
    for part_name, f in Settings.described():
        if part_name != current:
            current = part_name
            out += ["", f"**{_TITLES[part_name]}**", "", "| variable | default | what it sets |", "| --- | --- | --- |"]
        default = f.default if isinstance(f.default, str | int | float | bool) or f.default is None else str(f.default)
        if f.name == "signing_keys":
            default = "(none)"
        shown = f"`{default}`" if default != "" else "(empty)"
        env = f"`{f.metadata['env']}`"
        if f.metadata["aliases"]:
            env += " (was " + ", ".join(f"`{a}`" for a in f.metadata["aliases"]) + ")"
        doc = f.metadata["doc"].replace("|", "\\|")
        out.append(f"| {env} | {shown.replace('|', chr(92) + '|')} | {doc} |")
    return "\n".join(out).strip("\n")


def _section(text: str) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"tracker.config: the markers {BEGIN!r} and {END!r} are missing")
    return start + len(BEGIN), end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.config", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", type=Path, metavar="README", help="exit 1 if README's table is not the current one")
    mode.add_argument("--write", type=Path, metavar="README", help="replace README's table with the current one")
    parser.add_argument("--env-example", action="store_true",
                        help="deploy/env.example instead of the table (--check, --write: that whole file)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.env_example:
        return _env_example(args.check, args.write)
    made = "\n" + table() + "\n"
    if args.check or args.write:
        path = args.check or args.write
        text = path.read_text()
        start, end = _section(text)
        if args.write:
            path.write_text(text[:start] + made + text[end:])
            return 0
        if text[start:end] != made:
            print(f"{path}: the settings table is out of date; run python -m tracker.config --write {path}",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    print(made.strip("\n"))
    return 0


def _env_example(check: Path | None, write: Path | None) -> int:
    from tracker.config._env_example import env_example

    made = env_example()
    if write:
        write.write_text(made)
    elif check:
        if not check.exists() or check.read_text() != made:
            print(f"{check}: out of date; run python -m tracker.config --env-example --write {check}", file=sys.stderr)
            return 1
    else:
        print(made, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
