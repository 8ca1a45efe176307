"""The recipient pages' settings: unsubscribe, double opt-in confirm, preferences, the bad-link page.

Brand values end up inside markup and a style sheet, so each is checked here
to a shape that cannot carry any: a colour is a CSS hex colour, a logo is a
plain http(s) URL without quotes, spaces or angle brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tracker.config._fields import SettingsError, SettingsPart, int_range, setting

_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
# Characters that could end an attribute, a url() or a CSP source list.
_UNSAFE_IN_URL = re.compile(r"[\s\"'<>\\;,`()]|[\x00-\x1f\x7f]")


def optional_folder(raw: str) -> Path | None:
    return Path(raw) if raw else None


def hex_colour(raw: str) -> str:
    if not _HEX_COLOUR.fullmatch(raw):
        raise ValueError("expected a CSS hex colour such as #1f6feb or #c00")
    return raw.lower()


def logo_url(raw: str) -> str:
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or _UNSAFE_IN_URL.search(raw):
        raise ValueError("expected an http:// or https:// URL without spaces, quotes or brackets")
    return raw


def brand_name(raw: str) -> str:
    name = raw.strip()
    if len(name) > 80 or any(ord(c) < 32 for c in name):
        raise ValueError("expected at most 80 printable characters")
    return name


def language(raw: str) -> str:
    if not _LANGUAGE.fullmatch(raw):
        raise ValueError("expected a language tag such as en or pt-BR")
    return raw.lower()


@dataclass(frozen=True, slots=True, repr=False)
class PagesSettings(SettingsPart):
    """What a recipient sees at `/u/` and `/cf/` (`TRACKER_PAGES_*`, `TRACKER_BRAND_*`)."""

    templates_dir: Path | None = setting(
        "TRACKER_PAGES_DIR",
        None,
        optional_folder,
        "folder of page templates that win over the shipped ones of the same name (empty: shipped only)",
    )
    strings_dir: Path | None = setting(
        "TRACKER_PAGES_STRINGS_DIR",
        None,
        optional_folder,
        "folder of LANG.json page strings that add languages or override shipped words (empty: shipped only)",
    )
    default_language: str = setting(
        "TRACKER_PAGES_LANGUAGE", "en", language, "page language when Accept-Language names none we have"
    )
    brand_name: str = setting("TRACKER_BRAND_NAME", "", brand_name, "name shown at the top of the pages")
    brand_logo_url: str = setting(
        "TRACKER_BRAND_LOGO_URL", "", logo_url, "http(s) URL of a logo shown at the top of the pages (empty: none)"
    )
    brand_colour: str = setting(
        "TRACKER_BRAND_COLOR", "#1f6feb", hex_colour, "CSS hex colour of the pages' buttons and links"
    )

    confirm_max_age_days: int = setting(
        "TRACKER_CONFIRM_MAX_AGE_DAYS",
        0,
        int_range(0, 3650),
        "double opt-in links older than this get an expired-link page (0: no limit)",
    )
    unsubscribe_max_age_days: int = setting(
        "TRACKER_UNSUBSCRIBE_MAX_AGE_DAYS",
        0,
        int_range(0, 3650),
        "unsubscribe links older than this get an expired-link page (0: no limit; else at least 60)",
    )

    def check(self) -> None:
        # An unsubscribe link must keep working well after the send (CAN-SPAM asks for 30 days,
        # RFC 8058 one-click comes from old messages too): a short limit would strand people.
        if 0 < self.unsubscribe_max_age_days < 60:
            raise SettingsError("TRACKER_UNSUBSCRIBE_MAX_AGE_DAYS: expected 0 (no limit) or at least 60 days")
        for env, folder in (("TRACKER_PAGES_DIR", self.templates_dir), ("TRACKER_PAGES_STRINGS_DIR", self.strings_dir)):
            if folder is not None and not folder.is_dir():
                raise SettingsError(f"{env}={str(folder)!r}: not a folder")
