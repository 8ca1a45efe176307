"""How a setting is declared and read: parsers, `setting()`, and the base every settings part shares.

A setting is a dataclass field whose metadata holds its variable name (and any
older names still accepted), a parser and a one-line doc. A part is a frozen
dataclass of such fields; a field made with `part()` holds another part, read
from the same environment. Reading collects every problem before failing, so
an operator sees all bad variables at once, by name, with secrets hidden.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.replace("_", ""))
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return value

    return parse


def float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}")
        return value

    return parse


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return raw

    return parse


def url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def setting(env: str, default: Any, parse: Callable[[str], Any] = str, doc: str = "",
            aliases: tuple[str, ...] = ()) -> Any:  # fmt: skip
    """A field read from `env` (or, when that is unset, from an older name in `aliases`)."""
    metadata = {"env": env, "parse": parse, "doc": doc, "aliases": aliases}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


def part(cls: type[SettingsPart]) -> Any:
    """A field holding a whole part (`Settings.flusher`, ...), read from the same environment."""
    return field(default_factory=cls, metadata={"part": cls})


def redact_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return value


def cluster_url_refusal(url: str) -> str | None:
    """Why `url` (one Redis URL, or a comma list of seeds) cannot name a Redis Cluster, which is reached over
    TCP and has database 0 only (redis-py refuses anything else with an error that names no setting)."""
    for seed in (part.strip() for part in url.split(",")):
        parts = urlsplit(seed if "://" in seed else f"redis://{seed}")
        if parts.scheme == "unix":
            return (f"REDIS_URL is a Unix socket ({parts.path}), but a Redis Cluster (TRACKER_REDIS_CLUSTER=1) is "
                    "reached over TCP: name a node as redis://host:port")
        database = parts.path.strip("/") or parse_qs(parts.query).get("db", [""])[0]
        if database not in ("", "0"):
            return (f"REDIS_URL names database {database!r}, but a Redis Cluster (TRACKER_REDIS_CLUSTER=1) has "
                    "database 0 only: remove it from the URL")
    return None


_SECRET_WORDS = ("key", "secret", "auth", "password", "token", "credential")


def is_secret(name: str) -> bool:
    """Settings whose values must never reach a log line or an error message."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _shown(env: str, raw: str) -> str:
    if is_secret(env):
        return "<hidden>"
    return repr(redact_url(raw) if env.endswith("_URL") else raw)


class SettingsPart:
    """What every settings part can do: read itself, be copied with changes, show itself safely."""

    __slots__ = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build from the environment; `overrides` (already typed; a dict for a part) win, as CLI flags do."""
        problems: list[str] = []
        settings = cls._read(os.environ if environ is None else environ, overrides, problems)
        if problems:
            raise SettingsError("bad settings: " + "; ".join(problems))
        settings.check()
        return settings

    @classmethod
    def _read(cls, environ: Mapping[str, str], overrides: Mapping[str, Any], problems: list[str]) -> Self:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            given = overrides.get(f.name)
            if "part" in f.metadata:
                part_cls = f.metadata["part"]
                values[f.name] = (
                    given if isinstance(given, part_cls) else part_cls._read(environ, given or {}, problems)
                )
                continue
            if f.name in overrides:
                values[f.name] = given
                continue
            env = next((name for name in (f.metadata["env"], *f.metadata["aliases"]) if name in environ), None)
            if env is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](environ[env])
            except ValueError as exc:
                problems.append(f"{env}={_shown(env, environ[env])}: {exc}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise TypeError(f"{cls.__name__} has no settings {sorted(unknown)}")
        return cls(**values)

    def check(self) -> None:
        """Rules across fields; a part that has some overrides this (and calls its parts')."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "part" in f.metadata:
                getattr(self, f.name).check()

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`; a dict given for a part changes fields of that part."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "part" in f.metadata and isinstance(changes.get(f.name), dict):
                changes[f.name] = getattr(self, f.name).replace(**changes[f.name])
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def require(self, *names: str) -> None:
        """Fail with the variable's name when a setting this command needs is empty."""
        by_name = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for name in names:
            if not getattr(self, name):
                raise SettingsError(f"{by_name[name].metadata['env']} is not set")

    def __repr__(self) -> str:
        # Secrets never reach logs: keys show by id only, URLs without passwords.
        shown = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, SettingsPart):
                shown.append(f"{f.name}={value!r}")
                continue
            if isinstance(value, dict):
                value = f"<{len(value)} keys: {sorted(value)}>"
            elif f.name.endswith("_url"):
                value = redact_url(value)
            elif is_secret(f.name) and isinstance(value, str | bytes) and value:
                value = "<hidden>"
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def described(cls) -> Iterator[tuple[str, dataclasses.Field]]:
        """(part name, field) of every setting, parts' settings after this part's own ones."""
        parts = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "part" in f.metadata:
                parts.append(f)
            else:
                yield "", f
        for f in parts:
            for _, inner in f.metadata["part"].described():
                yield f.name, inner
