"""Selectors: reads shaped for pages and the websocket protocol."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from django.conf import settings

from arena.events import (
    AnswerState,
    AnswerStats,
    BattleStateEvent,
    PublicStats,
    SourceInfo,
    TurnSources,
    TurnState,
    TurnStats,
    VoteRecordedEvent,
    answer_error_info,
    battle_state_event,
    public_stats,
    vote_recorded_event,
)
from arena.markdown import render_markdown
from arena.models import Answer, Battle, Side, Turn


def answer_stats_public(answer: Answer) -> PublicStats:
    """The stats a visitor may see before the reveal."""
    return public_stats(tokens=answer.tokens, finish_reason=answer.finish_reason)


def answer_stats(answer: Answer) -> AnswerStats:
    """The full stats, timings and speed included: only once revealed."""
    rate = None
    if answer.tokens and answer.duration_ms and answer.ttft_ms is not None:
        decode_ms = answer.duration_ms - answer.ttft_ms
        if decode_ms > 0 and answer.tokens > 1:
            rate = round((answer.tokens - 1) / (decode_ms / 1000), 2)
    return {
        "tokens": answer.tokens,
        "prompt_tokens": answer.prompt_tokens,
        "ttft_ms": answer.ttft_ms,
        "duration_ms": answer.duration_ms,
        "tokens_per_s": rate,
        "finish_reason": answer.finish_reason,
    }


def answer_sources(answer: Answer) -> list[SourceInfo] | None:
    if answer.passages is None:
        return None
    return [
        {
            "document": str(p.get("document", "")),
            "source": str(p.get("source", "")),
            "section": str(p.get("section", "")),
            "text": str(p.get("text", "")),
            "score": float(p.get("score", 0.0)),
            "similarity": float(p.get("similarity", 0.0)),
        }
        for p in answer.passages
    ]


def answer_state(answer: Answer, *, revealed: bool = False) -> AnswerState:
    return {
        "side": answer.side,
        "attempt": answer.attempt,
        "status": answer.status,
        "text": answer.text,
        "html": render_markdown(answer.text) if answer.is_finished else "",
        "stats": answer_stats(answer) if revealed else answer_stats_public(answer),
        # The code's fixed message: error_message holds the detail, for the admin.
        "error": answer_error_info(answer.error_code)
        if answer.status == Answer.Status.ERROR
        else None,
        "sources": answer_sources(answer) if revealed else None,
    }


def battle_models(battle: Battle) -> dict[str, str]:
    return {"a": battle.contender_a.name, "b": battle.contender_b.name}


def battle_state(*, battle_id: uuid.UUID | str) -> BattleStateEvent:
    """The whole battle as the visitor may see it: names only once revealed."""
    battle = Battle.objects.select_related("contender_a", "contender_b").get(pk=battle_id)
    turns = [(turn, turn.answers.all()) for turn in battle.turns.prefetch_related("answers")]
    return battle_state_of(battle, turns)


def battle_state_of(
    battle: Battle, turns: Sequence[tuple[Turn, Iterable[Answer]]]
) -> BattleStateEvent:
    """battle_state from rows already loaded: the battle (its contenders
    joined) and its turns in order, each with its answers."""
    revealed = battle.mode == Battle.Mode.NAMED or battle.status != Battle.Status.OPEN
    states: list[TurnState] = []
    last_current: list[Answer] = []
    for turn, answers in turns:
        current = {a.side: a for a in answers if not a.superseded}
        last_current = list(current.values())
        states.append(
            {
                "index": turn.index,
                "user": turn.user_text,
                "a": answer_state(current[Side.A], revealed=revealed)
                if Side.A in current
                else None,
                "b": answer_state(current[Side.B], revealed=revealed)
                if Side.B in current
                else None,
            }
        )
    is_open = battle.status == Battle.Status.OPEN
    finished = bool(last_current) and all(a.is_finished for a in last_current)
    failed = any(a.status == Answer.Status.ERROR for a in last_current)
    vote = getattr(battle, "vote", None) if not is_open else None
    return battle_state_event(
        battle={
            "id": str(battle.id),
            "mode": battle.mode,
            "status": battle.status,
            "can_vote": is_open and finished and not failed,
            "can_send": is_open
            and (not states or (finished and not failed))
            and len(states) < settings.ARENA_MAX_TURNS,
            "turns_left": max(0, settings.ARENA_MAX_TURNS - len(states)),
            "models": battle_models(battle) if revealed else None,
            "vote": vote.choice if vote else None,
        },
        turns=states,
    )


def vote_reveal(*, battle_id: uuid.UUID | str) -> VoteRecordedEvent:
    """The reveal after a vote: the names, every answer's full stats (timings,
    speed, prompt tokens), and the passages RAG answers were given."""
    battle = Battle.objects.select_related("contender_a", "contender_b", "vote").get(pk=battle_id)
    sources: list[TurnSources] = []
    stats: list[TurnStats] = []
    answers = Answer.objects.filter(turn__battle=battle, superseded=False).select_related("turn")
    for answer in answers.order_by("turn__index", "side"):
        stats.append(
            {"turn": answer.turn.index, "side": answer.side, "stats": answer_stats(answer)}
        )
        passages = answer_sources(answer)
        if passages is not None:
            sources.append({"turn": answer.turn.index, "side": answer.side, "sources": passages})
    return vote_recorded_event(
        choice=battle.vote.choice, models=battle_models(battle), sources=sources, stats=stats
    )
