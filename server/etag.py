"""``If-None-Match`` against an entity tag, as RFC 9110 §13.1.2 says: the one matcher of
every conditional route (state, media, debug page).

The header is ``*`` or a comma-separated list of entity tags, each ``"opaque"`` or
``W/"opaque"``; ``If-None-Match`` uses the *weak* comparison (a weak and a strong tag with
the same opaque part match). A comma inside the quotes belongs to the tag, so the list is
parsed, not split. A header that does not parse matches nothing: the server then answers
in full, which is always safe.
"""

from __future__ import annotations

import re
from typing import Final

_TAG: Final = re.compile(r'\s*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def entity_tags(if_none_match: str) -> tuple[str, ...] | None:
    """The quoted opaque tags of a list (weakness dropped); ``None`` if it does not parse."""
    tags: list[str] = []
    position = 0
    text = if_none_match.strip()
    while position < len(text):
        match = _TAG.match(text, position)
        if match is None or match.end() == position:
            return None
        tags.append(match.group(1))
        position = match.end()
    return tuple(tags)


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match: if_none_match`` names ``etag`` (the answer is then 304).

    ``*`` matches any current representation; otherwise weak comparison of each listed tag.
    """
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = entity_tags(if_none_match)
    return tags is not None and etag.removeprefix("W/") in tags
