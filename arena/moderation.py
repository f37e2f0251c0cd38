"""Moderation of user prompts before any model sees them.

Policies, in order: the built-in blocklist (regular expressions from
ARENA_MODERATION_BLOCKLIST), then an optional OpenAI-compatible moderation
endpoint (ARENA_MODERATION_URL, key in the variable ARENA_MODERATION_KEY_ENV
names). When the endpoint cannot be asked, ARENA_MODERATION_FAIL decides:
"closed" refuses the prompt, "open" lets it through.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import cache

from django.conf import settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    flagged: bool
    reason: str = ""


@cache
def _blocklist() -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in settings.ARENA_MODERATION_BLOCKLIST]


def prompt_moderate(text: str) -> Decision:
    for pattern in _blocklist():
        if pattern.search(text):
            return Decision(True, "blocklist")
    if settings.ARENA_MODERATION_URL:
        return _remote(text)
    return Decision(False)


def _remote(text: str) -> Decision:
    import httpx

    key = (
        os.environ.get(settings.ARENA_MODERATION_KEY_ENV, "")
        if settings.ARENA_MODERATION_KEY_ENV
        else ""
    )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(
            settings.ARENA_MODERATION_URL,
            json={"input": text, "model": settings.ARENA_MODERATION_MODEL},
            headers=headers,
            timeout=settings.ARENA_MODERATION_TIMEOUT,
        )
        response.raise_for_status()
        results = response.json()["results"]
        flagged = [r for r in results if r.get("flagged")]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        log.warning("moderation endpoint failed: %s", exc)
        if settings.ARENA_MODERATION_FAIL == "closed":
            return Decision(True, "moderation_unavailable")
        return Decision(False)
    if flagged:
        categories = sorted(k for k, v in (flagged[0].get("categories") or {}).items() if v)
        return Decision(True, ", ".join(categories) or "flagged")
    return Decision(False)
