"""422s in plain words: an enum names its allowed values, a pattern says what it wants, not its regex.

The shape stays the API's (`{"error": {"code", "message"}}`, checked against the OpenAPI document by
`Api.call`) and the message still ends with the field's path.
"""

from __future__ import annotations

import msgspec
import pytest

from edge.api import ENDPOINTS
from edge.api._errors import plain_validation_message
from edge.api.schemas import PATTERN_WORDS, MessageIn
from tests.rigs.api_helpers import Api, running_api
from tracker.contract.tokens import EVENT_CHANNELS, MESSAGE_CHANNELS

FIELD_NAME_WORDS = "field names are 1 to 63 lower-case letters, digits and underscores, starting with a letter"


@pytest.fixture
async def api(settings, pg) -> Api:
    async with running_api(settings) as api:
        yield api


async def refused(api: Api, path: str, body: object) -> str:
    """The message of the 422 `body` gets, after checking its shape."""
    response = await api.call("POST", path, json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"error": {"code": "invalid_request", "message": response.json()["error"]["message"]}}
    return response.json()["error"]["message"]


async def test_a_wrong_channel_gets_the_allowed_channels_in_plain_words(api: Api) -> None:
    message = await refused(api, "/messages", {"channel": "push", "name": "x", "content": "hi"})
    assert message == "channel must be one of: email, sms, web_push, app_push (got 'push') - at `$.channel`"
    assert "Invalid enum" not in message
    message = await refused(api, "/resources", {"name": "Newsletter", "channel": "fax"})
    assert message == f"channel must be one of: {', '.join(EVENT_CHANNELS)} (got 'fax') - at `$.channel`"


async def test_other_enums_name_their_values_and_keep_the_path(api: Api) -> None:
    message = await refused(api, "/profile-fields", {"name": "plan", "type": "text"})
    assert message == "type must be one of: string, number, boolean, date, enum (got 'text') - at `$.type`"
    message = await refused(api, "/profiles", {"email_status": "bounced"})
    assert (
        message == "email_status must be one of: active, hard_bounced, complained (got 'bounced') - at `$.email_status`"
    )


async def test_nested_enums_list_items_and_tags_are_explained(api: Api) -> None:
    hook = {"name": "h", "destination": {"type": "ftp", "url": "ftp://example.com"}}
    assert (
        await refused(api, "/hooks", hook)
        == "type must be one of: http, amqp, kafka (got 'ftp') - at `$.destination.type`"
    )
    hook = {
        "name": "h",
        "destination": {"type": "http", "url": "https://example.com/in"},
        "filter": {"channels": ["push"]},
    }
    message = await refused(api, "/hooks", hook)
    assert message.startswith("channels must each be one of: ") and "email" in message and "sms" in message
    assert message.endswith("(got 'push') - at `$.filter.channels[0]`")


async def test_a_bad_field_name_says_what_a_field_name_is_not_the_regex(api: Api) -> None:
    message = await refused(api, "/profile-fields", {"name": "Bad Name", "type": "string"})
    assert message == FIELD_NAME_WORDS + " - at `$.name`"
    assert "regex" not in message and "^" not in message


async def test_pattern_failures_deep_in_a_body_are_in_words_with_their_path(api: Api) -> None:
    hook = {"name": "h", "destination": {"type": "http", "url": "ftp://example.com/in"}}
    assert await refused(api, "/hooks", hook) == (
        "the URL must start with http:// or https:// and a host name - at `$.destination.url`"
    )
    hook = {"name": "h", "destination": {"type": "http", "url": "https://example.com/in", "headers": {"X Bad": "1"}}}
    assert await refused(api, "/hooks", hook) == (
        "header names are 1 to 100 letters, digits and hyphens - at `key` in `$.destination.headers`"
    )


def test_messages_msgspec_did_not_mean_are_left_alone() -> None:
    for text in ("Expected `str`, got `int` - at `$.channel`", "Object missing required field `name`"):
        assert plain_validation_message(MessageIn, text) == text
    # A path the type does not have (msgspec and the type disagree): the original, never a guess.
    assert plain_validation_message(MessageIn, "Invalid enum value 'x' - at `$.nowhere`") == (
        "Invalid enum value 'x' - at `$.nowhere`"
    )
    assert set(MESSAGE_CHANNELS) < set(EVENT_CHANNELS)


def _patterns(info: msgspec.inspect.Type, seen: set[int]) -> set[str]:
    """Every regex a request type checks, however deep."""
    if id(info) in seen:
        return set()
    seen.add(id(info))
    found = {info.pattern} if isinstance(info, msgspec.inspect.StrType) and info.pattern else set()
    children: list = []
    if isinstance(info, msgspec.inspect.StructType):
        children = [field.type for field in info.fields]
    elif isinstance(info, msgspec.inspect.UnionType):
        children = list(info.types)
    elif isinstance(info, msgspec.inspect.DictType):
        children = [info.key_type, info.value_type]
    elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.VarTupleType)):
        children = [info.item_type]
    elif isinstance(info, msgspec.inspect.Metadata):
        children = [info.type]
    for child in children:
        found |= _patterns(child, seen)
    return found


def test_every_pattern_an_endpoint_checks_has_words() -> None:
    requests = [endpoint.request for endpoint in ENDPOINTS if endpoint.request is not None]
    patterns: set[str] = set()
    for info in msgspec.inspect.multi_type_info(requests):
        patterns |= _patterns(info, set())
    assert "^[a-z][a-z0-9_]{0,62}$" in patterns  # the walk reaches the field names
    assert sorted(patterns - set(PATTERN_WORDS)) == []
