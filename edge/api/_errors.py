"""msgspec's validation errors in plain words: the allowed values of an enum, a pattern's meaning, not its regex.

msgspec says `Invalid enum value 'push' - at `$.channel``: right, but it leaves the caller guessing. The
request type says what is allowed, so the path is followed through it to the Literal (or the tags of a
tagged union) that refused the value. Pattern failures are named by their regex, which is looked up in
`edge.api.schemas.PATTERN_WORDS`. The ` - at `$.path`` part msgspec adds is kept as it is.
"""

from __future__ import annotations

import ast
import re
import types
import typing
from typing import Annotated, Any, Literal, Union

import msgspec

from edge.api.schemas import PATTERN_WORDS

_ENUM = re.compile(r"^Invalid (?:enum )?value (?P<got>.+?)(?P<where> - at `(?P<path>[^`]*)`)$")
_PATTERN = re.compile(r"^Expected `str` matching regex (?P<regex>'.*'|\".*\")(?P<where> - at .*)$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def plain_validation_message(type_: Any, text: str) -> str:
    """`text` (a msgspec ValidationError's) reworded where it names no allowed values or shows a regex."""
    if match := _ENUM.match(text):
        steps = _STEP.findall(match["path"].removeprefix("$"))
        allowed = _allowed_at(type_, [name or index for name, index in steps])
        if allowed:
            names = [name for name, index in steps if name]
            subject = names[-1] if names else "the value"
            each = " each" if steps and steps[-1][1] else ""  # a list's item: `channels must each be one of`
            choices = ", ".join(str(value) for value in allowed)
            return f"{subject} must{each} be one of: {choices} (got {match['got']}){match['where']}"
    elif match := _PATTERN.match(text):
        regex = ast.literal_eval(match["regex"])  # msgspec quotes it as repr() does
        words = PATTERN_WORDS.get(regex)
        if words:
            return words + match["where"]
    return text


def _allowed_at(type_: Any, steps: list[str]) -> tuple[Any, ...] | None:
    """The values a Literal (or a tagged union's tag) at `steps` inside `type_` takes; None: not found."""
    for arm in _arms(type_):
        if not steps:
            if typing.get_origin(arm) is Literal:
                return typing.get_args(arm)
            continue
        step, rest = steps[0], steps[1:]
        if isinstance(arm, type) and issubclass(arm, msgspec.Struct):
            if step == getattr(arm.__struct_config__, "tag_field", None) and not rest:
                tags = [a.__struct_config__.tag for a in _arms(type_) if isinstance(a, type)
                        and issubclass(a, msgspec.Struct) and a.__struct_config__.tag is not None]  # fmt: skip
                return tuple(tags) or None
            hints = typing.get_type_hints(arm, include_extras=True)
            inner = next((hints[f.name] for f in msgspec.structs.fields(arm) if f.encode_name == step), None)
        elif step == "...":
            inner = typing.get_args(arm)[1] if typing.get_origin(arm) is dict else None
        else:
            args = typing.get_args(arm)
            inner = args[0] if typing.get_origin(arm) in (list, set, frozenset) or args[1:] == (...,) else None
        found = _allowed_at(inner, rest) if inner is not None else None
        if found:
            return found
    return None


def _arms(type_: Any) -> list[Any]:
    """A type without its Annotated metadata, split into the arms of a union."""
    while typing.get_origin(type_) is Annotated:
        type_ = typing.get_args(type_)[0]
    if typing.get_origin(type_) in (Union, types.UnionType):
        return [arm for member in typing.get_args(type_) for arm in _arms(member)]
    return [type_]
