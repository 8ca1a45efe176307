"""Which language a page is in: the request's Accept-Language against the string files we have.

Strings are JSON files named for their language (`en.json`, `ru.json`, `pt-br.json`),
read once at start. English is complete and is what any missing word falls back
to, so a partial translation still gives a whole page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SHIPPED = Path(__file__).parent / "strings"
FALLBACK = "en"
_TAG = re.compile(r"[a-z]{1,8}(?:-[a-z0-9]{1,8})*|\*")
_QUALITY = re.compile(r"(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)", re.ASCII)


class StringsError(ValueError):
    """A strings file that cannot be used; the message names the file."""


def load_strings(*folders: Path | None) -> dict[str, dict[str, str]]:
    """language -> word key -> text, later folders winning key by key, every language completed from English."""
    catalogs: dict[str, dict[str, str]] = {}
    for folder in folders:
        if folder is None:
            continue
        for path in sorted(folder.glob("*.json")):
            language = path.stem.lower()
            if not _TAG.fullmatch(language) or language == "*":
                raise StringsError(f"{path}: the file name is not a language tag such as en or pt-br")
            try:
                words = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise StringsError(f"{path}: {exc}") from None
            if not isinstance(words, dict) or not all(isinstance(v, str) for v in words.values()):
                raise StringsError(f"{path}: expected one JSON object of key: text")
            catalogs.setdefault(language, {}).update(words)
    english = catalogs.get(FALLBACK, {})
    return {language: {**english, **words} for language, words in catalogs.items()}


def pick_language(header: str, available: frozenset[str] | set[str], default: str) -> str:
    """The best language of `available` for an Accept-Language header (RFC 9110 12.5.4), else `default`.

    Ranges are taken by quality, then in the order given; `de-AT` falls back to
    `de` when only that is there, `*` means the default, q=0 means "not this one".
    """
    ranked: list[tuple[float, int, str]] = []
    refused: set[str] = set()
    for position, item in enumerate(header.split(",")[:32]):  # a bound on work, not on any real header
        tag, _, params = item.strip().lower().partition(";")
        tag = tag.strip()
        if not _TAG.fullmatch(tag):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                found = _QUALITY.fullmatch(value.strip())
                quality = float(found.group(1)) if found else -1.0  # malformed: ignore the range, not guess
        if quality < 0:
            continue
        if quality == 0:
            refused.add(tag)
            continue
        ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            if default not in refused:
                return default
            continue
        while tag:
            if tag in available and tag not in refused:
                return tag
            tag = tag.rpartition("-")[0]
    return default
