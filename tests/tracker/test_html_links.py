"""Trackable links in email HTML: what is tracked, what is left alone, and odd markup."""

from __future__ import annotations

import pytest

from tracker.domain.errors import InputError
from tracker.domain.html_links import find_links
from tracker.domain.message_templates import CLICK, OPEN, READ, UNSUBSCRIBE, compile_template


def with_slots(html: str) -> str:
    """The HTML with each tracked href shown as [i]: what a recipient's copy is made from."""
    found = find_links(html)
    return "".join(f"[{part}]" if isinstance(part, int) else part for part in found.parts)


def urls(html: str) -> list[str]:
    return [link.url for link in find_links(html).links]


def test_http_and_https_links_are_tracked_in_order() -> None:
    html = '<p><a href="https://a.example/x">A</a> <a href="http://b.example/">B</a></p>'
    assert urls(html) == ["https://a.example/x", "http://b.example/"]
    assert with_slots(html) == '<p><a href="[0]">A</a> <a href="[1]">B</a></p>'


@pytest.mark.parametrize(
    "href",
    ["mailto:someone@example.com", "tel:+14155550123", "#section", "/relative/page", "{{unsubscribe_url}}",
     "https://example.com/?u={{ user_id }}", "{% url %}", "sms:+1555", ""],
)  # fmt: skip
def test_links_that_are_not_http_are_left_exactly_as_written(href: str) -> None:
    html = f'<a href="{href}" class="x">link</a>'
    assert urls(html) == []
    assert with_slots(html) == html


@pytest.mark.parametrize("href", ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,<b>x</b>"])
def test_javascript_and_data_urls_are_never_tracked(href: str) -> None:
    assert urls(f'<a href="{href}">x</a>') == []
    with pytest.raises(InputError, match="not tracked"):
        find_links(f'<a href="{href}" update-vip="true">x</a>')


def test_uppercase_tags_and_attributes_unquoted_values_and_unclosed_tags() -> None:
    html = (
        "<DIV><P>text<A HREF=https://a.example/1 Update-VIP=yes TARGET=_blank>one<p>two <a href='https://b.example/2'>"
    )
    found = find_links(html)
    assert [link.url for link in found.links] == ["https://a.example/1", "https://b.example/2"]
    assert found.links[0].attributes == {"update-vip": "yes"}
    assert with_slots(html) == '<DIV><P>text<A HREF="[0]" TARGET=_blank>one<p>two <a href="[1]">'


def test_entities_in_hrefs_are_decoded_into_the_stored_url() -> None:
    html = '<a href="https://e.example/p?a=1&amp;b=2&#38;c=%20&lt;">x</a>'
    assert urls(html) == ["https://e.example/p?a=1&b=2&c=%20<"]


def test_the_same_url_twice_with_different_attributes_is_two_links() -> None:
    html = (
        '<a href="https://shop.example/" update-clicked_link="true">top</a>'
        '<a href="https://shop.example/" subscribe-to="3" update-clicked_link="false">bottom</a>'
    )
    found = find_links(html)
    assert [(link.url, link.attributes) for link in found.links] == [
        ("https://shop.example/", {"update-clicked_link": "true"}),
        ("https://shop.example/", {"subscribe-to": "3", "update-clicked_link": "false"}),
    ]
    # Link attributes never reach the recipient.
    assert with_slots(html) == '<a href="[0]">top</a><a href="[1]">bottom</a>'


def test_links_inside_comments_scripts_and_styles_are_not_links() -> None:
    html = (
        '<!-- <a href="https://commented.example/">old</a> -->'
        "<script>var s = '<a href=\"https://script.example/\">';</script>"
        '<style>a[href="https://style.example/"] {}</style>'
        '<a href="https://real.example/">real</a>'
    )
    assert urls(html) == ["https://real.example/"]


def test_everything_but_the_tracked_href_and_link_attributes_is_kept_byte_for_byte() -> None:
    html = (
        "<!DOCTYPE html>\r\n<html><head><meta charset=utf-8></head>\r\n<body>\n"
        '  <a  class="btn"\n     href = "https://x.example/é?q=a b"   data-x=\'1\'  update-score="5"  >Go</a>\n'
        "  &nbsp;&copy; caf\u00e9</body></html>"
    )
    found = find_links(html)
    assert found.links[0].url == "https://x.example/%C3%A9?q=a%20b"
    assert with_slots(html) == (
        "<!DOCTYPE html>\r\n<html><head><meta charset=utf-8></head>\r\n<body>\n"
        '  <a  class="btn"\n     href = "[0]"   data-x=\'1\'  >Go</a>\n'
        "  &nbsp;&copy; caf\u00e9</body></html>"
    )


def test_a_link_that_cannot_be_made_safe_is_refused_with_its_line() -> None:
    with pytest.raises(InputError, match="line 3") as error:
        find_links('<p>\n<a href="https://ok.example/">ok</a>\n<a href="https://bad.example/\x01">bad</a>')
    assert error.value.code == "bad_link"


def test_the_email_template_adds_the_pixel_and_beacon_before_the_body_closes() -> None:
    template = compile_template(
        "email", '<html><body><a href="https://a.example/">a</a>{{ unsubscribe_url }}</body></html>'
    )
    kinds = [part[0] for part in template.parts if isinstance(part, tuple)]
    assert kinds == [CLICK, UNSUBSCRIBE, OPEN, READ]
    assert template.parts[-1].endswith('px"></body></html>')


def test_html_without_a_body_tag_gets_the_pixels_at_the_end() -> None:
    template = compile_template("email", '<p><a href="https://a.example/">a</a></p>')
    assert template.parts[-1].endswith('style="display:block;border:0;width:1px;height:1px">')


def test_sms_links_are_found_in_text_without_trailing_punctuation() -> None:
    template = compile_template(
        "sms", "Sale! https://s.example/a?x=1. Also (https://s.example/b), stop: {{unsubscribe_url}}"
    )
    assert [link.url for link in template.links] == ["https://s.example/a?x=1", "https://s.example/b"]
    assert template.parts == ("Sale! ", ("short", 0), ". Also (", ("short", 1), "), stop: ", ("unsubscribe", 0), "")
