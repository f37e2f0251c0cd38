"""Selectors: reads of contenders and endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from arena.models import Answer, Vote
from inference.engines.base import GenerationRequest, Message
from inference.engines.openai import EndpointConfig
from inference.models import Contender, Endpoint, Engine, Health
from inference.prompts import messages_build
from inference.tokens import max_tokens_fit, passages_reserve, prompt_counter


def contenders_battling() -> QuerySet[Contender]:
    """Contenders that may be drawn into a battle now: enabled, on a real
    engine, not known to be unhealthy, and (for a server) on an enabled endpoint."""
    return (
        Contender.objects.filter(enabled=True)
        .exclude(engine=Engine.NONE)
        .exclude(health=Health.DOWN)
        .filter(Q(endpoint__isnull=True) | Q(endpoint__enabled=True))
        .select_related("endpoint")
    )


def endpoint_config(endpoint: Endpoint) -> EndpointConfig:
    """What the engine needs from an endpoint row (the key stays in its variable)."""
    return EndpointConfig(
        name=endpoint.name,
        base_url=endpoint.base_url,
        api_key_env=endpoint.api_key_env,
        api_key_refused=endpoint.api_key_refusal(),
        connect_timeout=endpoint.connect_timeout,
        first_token_timeout=endpoint.first_token_timeout,
        idle_timeout=endpoint.idle_timeout,
        total_timeout=endpoint.total_timeout,
    )


def engine_kinds(answer_ids: list[int]) -> dict[int, str]:
    """The engine of each answer's contender: which queue runs it."""
    return dict(Answer.objects.filter(id__in=answer_ids).values_list("id", "contender__engine"))


_records_lock = threading.Lock()
_records_cache: dict[str, tuple[float, dict[tuple[int, int], tuple[int, float]]]] = {}


def pair_vote_records(*, max_age: float = 60.0) -> dict[tuple[int, int], tuple[int, float]]:
    """Votes per contender pair, for active sampling: (lower id, higher id) ->
    (votes, the lower id's score: a win 1, a tie or both-bad 0.5). One GROUP BY
    over the votes the leaderboard counts (Vote.objects.counting), kept for
    `max_age` seconds per process."""
    with _records_lock:
        cached = _records_cache.get("records")
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
    rows = (
        Vote.objects.counting()
        .values_list("contender_a_id", "contender_b_id", "choice")
        .annotate(n=Count("id"))
        .order_by()
    )
    records: dict[tuple[int, int], tuple[int, float]] = {}
    for a, b, choice, n in rows:
        score_a = {"a": 1.0, "b": 0.0}.get(choice, 0.5) * n
        key, score_low = ((a, b), score_a) if a < b else ((b, a), n - score_a)
        votes, score = records.get(key, (0, 0.0))
        records[key] = (votes + n, score + score_low)
    with _records_lock:
        _records_cache["records"] = (time.monotonic(), records)
    return records


def pair_vote_records_forget() -> None:
    with _records_lock:
        _records_cache.clear()


def contender_request(
    contender: Contender,
    *,
    messages: list[Message],
    params: Mapping[str, Any],
    passages_pending: bool = False,
) -> GenerationRequest:
    """The request that runs `messages` on a contender with `params` (its own,
    as resolved for an answer, or overrides). Its `max_tokens` is clipped so
    the prompt and the answer fit the contender's context window, with room
    kept for the passages of a RAG answer not retrieved yet (`passages_pending`)."""
    rest = dict(params)
    endpoint = contender.endpoint if contender.engine == Engine.OPENAI else None
    reserve = passages_reserve(contender) if passages_pending else 0
    max_tokens = max_tokens_fit(
        context_window=contender.context_window,
        prompt_tokens=prompt_counter(contender)(messages) + reserve,
        max_tokens=int(rest.pop("max_tokens", settings.ARENA_MAX_NEW_TOKENS)),
    )
    return GenerationRequest(
        # A server names a LoRA adapter by its model name; the local engine
        # takes the adapter's folder.
        model=contender.served_name if endpoint is not None else contender.model,
        messages=messages,
        temperature=float(rest.pop("temperature", 0.7)),
        top_p=float(rest.pop("top_p", 1.0)),
        max_tokens=max_tokens,
        seed=int(rest.pop("seed")) if "seed" in rest else None,
        extra={k: float(v) for k, v in rest.items()},
        adapter_path=contender.adapter_path if endpoint is None else "",
    )


@dataclass(frozen=True)
class PromptFit:
    messages: list[Message] | None  # None: the new message does not fit, even alone
    # When it does not: the most tokens a new message alone could take.
    room_tokens: int = 0


def contender_messages(
    contender: Contender, *, exchanges: list[tuple[str, str]], text: str, max_tokens: int
) -> PromptFit:
    """What `contender` is sent for `text` after the side's `exchanges`: as
    much history as fits its context window in tokens, counted as its engine
    will (exactly for the local engine, a bound from UTF-8 bytes otherwise),
    with room for `max_tokens` of answer and for a RAG contender's passages."""
    count = prompt_counter(contender)
    budget = contender.context_window - max_tokens - passages_reserve(contender)
    messages = messages_build(
        system_prompt=contender.system_prompt,
        exchanges=exchanges,
        user_text=text,
        budget_tokens=budget,
        count=count,
    )
    if messages is not None:
        return PromptFit(messages)
    head: list[Message] = [{"role": "system", "content": contender.system_prompt}]
    empty: list[Message] = [{"role": "user", "content": ""}]
    return PromptFit(None, budget - count((head if contender.system_prompt else []) + empty))
