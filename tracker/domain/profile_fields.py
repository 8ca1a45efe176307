"""Profile fields: the fixed built-in ones and the custom ones declared with a type.

Values arrive typed (JSON) or as text (CSV cells, link attributes such as
`update-vip="true"`); both are checked against the declared type here, and
the text rules match `flusher_field_value` in Postgres, so a link attribute
accepted at registration is one the flusher can apply.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

import msgspec

from tracker.domain.errors import InputError

FIELD_TYPES = ("string", "number", "boolean", "date", "enum")
# Built-in profile columns: they cannot be declared as custom fields.
BUILTIN_FIELDS = (
    "id", "external_id", "email", "phone", "email_status", "phone_status",
    "created_at", "updated_at", "fields", "subscriptions",
)  # fmt: skip
EMAIL_STATUSES = ("active", "hard_bounced", "complained")
PHONE_STATUSES = ("active", "undelivered", "complained")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_STRING_LEN = 10_000
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})
# ASCII digits only (re.ASCII): Python's \d and float() also take other scripts' digits, which the
# flusher's SQL rules (and the API's JSON Schema patterns) do not.
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+[1-9]\d{6,14}", re.ASCII)


class FieldSpec(msgspec.Struct, frozen=True):
    name: str
    type: str
    enum_values: list[str] | None = None


class FieldValueError(InputError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__("invalid_field_value", f"field {field}: {problem}")
        self.field = field


async def load_fields(conn: Any) -> dict[str, FieldSpec]:
    rows = await conn.fetch("select name, type, enum_values from profile_fields order by name")
    return {row["name"]: FieldSpec(row["name"], row["type"], row["enum_values"]) for row in rows}


def check_declaration(name: str, type_: str, enum_values: list[str] | None) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise InputError("invalid_field_name", f"field name {name!r}: expected a-z, digits and _, up to 63 characters")
    if name in BUILTIN_FIELDS:
        raise InputError("builtin_field", f"field {name} is built in and cannot be declared")
    if type_ not in FIELD_TYPES:
        raise InputError("invalid_field_type", f"field {name}: type {type_!r} is not one of {', '.join(FIELD_TYPES)}")
    if (type_ == "enum") != (enum_values is not None):
        raise InputError("invalid_enum_values", f"field {name}: enum_values go with type enum, and only with it")
    if enum_values is not None and (not enum_values or len(set(enum_values)) != len(enum_values)):
        raise InputError("invalid_enum_values", f"field {name}: enum_values must be non-empty and distinct")


def check_value(spec: FieldSpec, value: Any) -> Any:
    """A JSON value for the field, as stored; raises FieldValueError naming the field."""
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            raise FieldValueError(spec.name, f"expected a string, got {_json_type(value)}")
        if len(value) > MAX_STRING_LEN:
            raise FieldValueError(spec.name, f"longer than {MAX_STRING_LEN} characters")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldValueError(spec.name, f"expected a number, got {_json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldValueError(spec.name, "expected a finite number")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise FieldValueError(spec.name, f"expected true or false, got {_json_type(value)}")
        return value
    if kind == "date":
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise FieldValueError(spec.name, f"expected a date as YYYY-MM-DD, got {_shown(value)}")
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            raise FieldValueError(spec.name, f"{value} is not a calendar date") from None
        return value
    assert spec.enum_values is not None
    if value not in spec.enum_values or not isinstance(value, str):
        raise FieldValueError(spec.name, f"expected one of {', '.join(spec.enum_values)}, got {_shown(value)}")
    return value


def parse_text(spec: FieldSpec, raw: str) -> Any:
    """The typed value of a text cell or link attribute (the rules of `flusher_field_value`)."""
    if spec.type == "number":
        if not _NUMBER.fullmatch(raw):
            raise FieldValueError(spec.name, f"expected a number, got {raw!r}")
        number = float(raw)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if spec.type == "boolean":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise FieldValueError(spec.name, f"expected true or false, got {raw!r}")
    if spec.type == "date":
        return check_value(spec, raw.strip())
    return check_value(spec, raw)


def check_email(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value.strip()):
        raise FieldValueError("email", f"expected an email address, got {_shown(value)}")
    # Addresses are unique per profile; case differences must not make two profiles.
    return value.strip().lower()


def check_phone(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldValueError("phone", f"expected a phone number as a string, got {_json_type(value)}")
    compact = re.sub(r"[\s\-().]", "", value)
    if not _PHONE.fullmatch(compact):
        raise FieldValueError("phone", f"expected an E.164 number such as +14155550123, got {value!r}")
    return compact


def check_external_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise FieldValueError("external_id", f"expected a string of 1 to 200 characters, got {_shown(value)}")
    return value


def check_status(field: str, value: Any) -> str:
    allowed = EMAIL_STATUSES if field == "email_status" else PHONE_STATUSES
    if value not in allowed or not isinstance(value, str):
        raise FieldValueError(field, f"expected one of {', '.join(allowed)}, got {_shown(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
