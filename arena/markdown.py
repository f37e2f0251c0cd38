"""Model output -> safe HTML. Nothing a model writes reaches a page unescaped,
and nothing it writes makes the browser fetch from another host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

# Raw HTML in the source is escaped by markdown-it (html=False); nh3 then
# drops anything outside the allow-list, including javascript: links.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)

_TAGS = {
    "p",
    "br",
    "hr",
    "em",
    "strong",
    "del",
    "s",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "img",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "th": {"style"},
    "td": {"style"},
    "ol": {"start"},
}
# Characters a browser drops from or folds inside a URL ("/\t/x" and "/\x"
# become "//x"): a source holding any is not taken for a local path.
_URL_FOLDED = frozenset("\\\t\n\r")


def image_source_allowed(src: str) -> bool:
    """Whether an image may load `src`: a same-origin path or inline data.

    An image loads with no click, so a remote one would carry whatever its
    URL holds (the conversation, a RAG passage) to its host. A path on this
    site or a `data:image/...` URL sends nothing anywhere; this is also
    exactly what the Content-Security-Policy's `img-src 'self' data:` lets
    the browser load (arena.middleware), so no image renders broken."""
    value = src.strip()
    if value.lower().startswith("data:image/"):
        return True
    if not value or any(c in _URL_FOLDED or ord(c) < 0x20 for c in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc and not value.startswith("//")


def _render_image(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    if image_source_allowed(str(token.attrGet("src") or "")):
        return self.image(tokens, idx, options, env)
    # A remote image keeps its words, not its request.
    return self.renderInline(token.children or [], options, env)


_md.add_render_rule("image", _render_image)


def _attribute_filter(element: str, attribute: str, value: str) -> str | None:
    """Second line behind the image rule, on the final HTML: no `<img>` keeps
    a remote source, and no link points at inline data."""
    if element == "img" and attribute == "src" and not image_source_allowed(value):
        return None
    if element == "a" and attribute == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


def render_markdown(text: str) -> str:
    html = _md.render(text)
    cleaned: Any = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="nofollow noopener noreferrer",
        filter_style_properties={"text-align"},
    )
    return str(cleaned)
