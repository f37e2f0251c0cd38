"""Putting retrieved passages into a RAG contender's prompt: pure functions.

The passages go into the system message, after the contender's own system
prompt, numbered so that answers can cite them ("[2]").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference.engines.base import Message

DEFAULT_TEMPLATE = (
    "Answer the user's question from the passages below, taken from the knowledge base "
    '"{knowledge_base}". Cite the passages you use by their number, like [1]. If the '
    "passages do not contain the answer, say so, then answer as well as you can.\n\n"
    "{passages}"
)
NO_PASSAGES = "(No passage of the knowledge base matched this question.)"
# Follow-up questions ("and in French?") mean little alone: the query is the
# last few user messages, the newest last, cut to what the embedder reads.
SECTION_JOIN = " \u203a "  # a right-pointing angle quote
QUERY_TURNS = 3
QUERY_MAX_CHARS = 2000


def query_from_messages(messages: Sequence[Message], *, turns: int = QUERY_TURNS) -> str:
    """The retrieval query for a conversation: its last `turns` user messages."""
    users = [m["content"].strip() for m in messages if m["role"] == "user"]
    query = "\n".join(u for u in users[-turns:] if u)
    # Keep the newest words when the query is too long.
    return query[-QUERY_MAX_CHARS:]


def passages_format(passages: Sequence[Mapping[str, Any]]) -> str:
    if not passages:
        return NO_PASSAGES
    blocks = []
    for number, p in enumerate(passages, start=1):
        where = SECTION_JOIN.join(
            part for part in (str(p.get("document", "")), str(p.get("section", ""))) if part
        )
        blocks.append(f"[{number}] {where}\n{p.get('text', '')}".strip())
    return "\n\n".join(blocks)


def template_fill(
    template: str, *, knowledge_base: str, passages: Sequence[Mapping[str, Any]]
) -> str:
    """The template with {passages} (and {knowledge_base}) filled in; any other
    braces in an admin's template are left as they are."""
    text = template or DEFAULT_TEMPLATE
    return text.replace("{knowledge_base}", knowledge_base).replace(
        "{passages}", passages_format(passages)
    )


def messages_with_passages(
    messages: Sequence[Message],
    *,
    passages: Sequence[Mapping[str, Any]],
    template: str,
    knowledge_base: str,
) -> list[Message]:
    """The conversation with the passages in its system message (merged after
    the contender's own system prompt, when there is one)."""
    context = template_fill(template, knowledge_base=knowledge_base, passages=passages)
    out: list[Message] = [{"role": m["role"], "content": m["content"]} for m in messages]
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{context}"
        return out
    return [{"role": "system", "content": context}, *out]
