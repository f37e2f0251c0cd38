"""Leaderboard categories of a conversation: pure functions, no Django.

Names follow LMArena's categories where they exist; the language is a tag
`language:<ISO 639-1 code>`, detected offline (py3langid ships its model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

LONG_PROMPT_CHARS = 2000  # roughly LMArena's "longer query" (500 tokens)
MULTI_TURN = "multi_turn"
CODING = "coding"
LONGER_QUERY = "longer_query"
HARD_PROMPTS = "hard_prompts"

_CODE = re.compile(
    r"```|^\s*(def |class |import |from \S+ import |#include|public static|function\s*\w*\(|"
    r"const \w+ =|let \w+ =|SELECT .+ FROM|for \(.*;.*;)|\w+\(.*\)\s*\{\s*$|=>\s*\{",
    re.MULTILINE | re.IGNORECASE,
)

# LMArena's 140k release: flattened `category_tag.<tagger>.<field>` columns.
CRITERIA = (
    "complexity",
    "creativity",
    "domain_knowledge",
    "problem_solving",
    "real_world",
    "specificity",
    "technical_accuracy",
)
_IMPORTED_FLAGS = {
    "creative_writing_v0.1.creative_writing": "creative_writing",
    "if_v0.1.if": "instruction_following",
    "math_v0.1.math": "math",
    **{f"criteria_v0.1.{c}": c for c in CRITERIA},
}


def language_warm() -> None:
    """Load py3langid's model (about 0.7 s on first use) so the first vote
    does not wait for it; the web process calls this at start-up."""
    language_of("warm up the language model")


def language_of(text: str) -> str | None:
    import py3langid

    text = text.strip()
    if len(text) < 3:
        return None
    code, _ = py3langid.classify(text[:2000])
    return str(code)


def conversation_categories(prompts: Sequence[str]) -> set[str]:
    """Categories of a battle from its user messages, first to last."""
    if not prompts:
        return set()
    tags: set[str] = set()
    if len(prompts) > 1:
        tags.add(MULTI_TURN)
    if any(_CODE.search(p) for p in prompts):
        tags.add(CODING)
    if max(len(p) for p in prompts) >= LONG_PROMPT_CHARS:
        tags.add(LONGER_QUERY)
    language = language_of(prompts[0])
    if language:
        tags.add(f"language:{language}")
    return tags


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return str(value).strip().lower() in {"true", "1", "yes"}


def imported_categories(tags: Mapping[str, object]) -> set[str]:
    """Categories from LMArena's category tags, given as `<tagger>.<field>` -> value
    (flattened columns) or nested {tagger: {field: value}} already flattened by the caller."""
    found = {name for key, name in _IMPORTED_FLAGS.items() if _truthy(tags.get(key, False))}
    # LMArena's "hard prompts": at least 6 of the 7 criteria.
    if sum(c in found for c in CRITERIA) >= 6:
        found.add(HARD_PROMPTS)
    return found


def flatten_tags(nested: object, prefix: str = "") -> dict[str, object]:
    """{"criteria_v0.1": {"complexity": true}} -> {"criteria_v0.1.complexity": true}."""
    out: dict[str, object] = {}
    if isinstance(nested, Mapping):
        for key, value in nested.items():
            out.update(flatten_tags(value, f"{prefix}{key}."))
    elif prefix:
        out[prefix[:-1]] = nested
    return out


def category_label(name: str) -> str:
    if name.startswith("language:"):
        return f"Language: {name.split(':', 1)[1]}"
    return name.replace("_", " ").capitalize()
