"""The one ``If-None-Match`` matcher (RFC 9110 §13.1.2), without a server."""

from __future__ import annotations

import pytest

from server.etag import entity_tags, none_match

ETAG = '"abc"'


@pytest.mark.parametrize(
    "header",
    ['"abc"', 'W/"abc"', '"x", "abc"', '"x",W/"abc" , "y"', "*", "  *  ", ' "abc" '],
)
def test_a_listed_tag_or_star_matches(header: str) -> None:
    assert none_match(header, ETAG)


@pytest.mark.parametrize(
    "header",
    [None, "", '"ab"', '"abcd"', "abc", '"x" "abc"', '"abc', 'xyz, "abc"', '"x", *', 'w/"abc"'],
)
def test_anything_else_does_not_match(header: str | None) -> None:
    """A substring, an unquoted tag, a malformed list or ``*`` inside a list is no match."""
    assert not none_match(header, ETAG)


def test_a_comma_inside_quotes_belongs_to_the_tag() -> None:
    assert entity_tags('"a,b", W/"c"') == ('"a,b"', '"c"')
    assert none_match('"a,b"', '"a,b"')
    assert not none_match('"a,b"', '"a"')


def test_a_weak_etag_of_ours_matches_its_strong_form() -> None:
    assert none_match('"abc"', 'W/"abc"')
