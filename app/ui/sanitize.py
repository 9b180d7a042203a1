"""Descriptions arrive as HTML: they are shown only as nh3 (an allowlist sanitizer) leaves them."""

from __future__ import annotations

from typing import Any

import nh3
from markupsafe import Markup

TAGS = {
    "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr", "i",
    "li", "mark", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
URL_SCHEMES = {"http", "https", "mailto"}


def safe_html(value: Any) -> Markup:
    """A description as markup that runs nothing: no script, no handlers, no javascript: links,
    no style (the pages' Content-Security-Policy would refuse it anyway). A value that is not
    a string is shown as its text."""
    if value is None:
        return Markup("")
    text = value if isinstance(value, str) else str(value)
    cleaned = nh3.clean(
        text,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(cleaned)  # noqa: S704  (nh3's output is the allowlist's markup)
