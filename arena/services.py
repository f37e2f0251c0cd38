"""Services: every write to battles, turns, answers and votes goes through here.

Each write service locks its battle row first, so concurrent sockets of one
visitor cannot interleave (a vote racing a regenerate, say); "once" rules are
enforced by the database (unique constraints, conditional updates).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from arena.concurrency import daemon
from arena.events import ArenaError, BattleStateEvent
from arena.models import Answer, Battle, Side, Turn, Visitor, Vote
from arena.ratelimit import daily_hit
from arena.sampling import PairRecord, pair_sample, pair_sample_active
from arena.selectors import battle_state_of
from arena.visitors import network_key, visitor_key
from inference.models import Contender
from inference.selectors import (
    PromptFit,
    contender_messages,
    contenders_battling,
    pair_vote_records,
)

DEFAULT_PARAMS = {"temperature": 0.7, "top_p": 1.0}


def _battle_lock(battle_id: uuid.UUID | str) -> Battle:
    return (
        Battle.objects.select_for_update()
        .select_related("contender_a", "contender_b")
        .get(pk=battle_id)
    )


def battle_create(
    *,
    session_key: str,
    mode: str = Battle.Mode.ANONYMOUS,
    contender_a: str | None = None,
    contender_b: str | None = None,
    rng: random.Random | None = None,
    ip: str = "",
) -> Battle:
    """A new battle: a weighted random pair on random sides, or, in named
    mode, the two contenders the visitor picked.

    `session_key` here and in every service below is the visitor id (from the
    signed cookie, arena.visitors); only its keyed hash is stored, as is the
    client's network for `ip`."""
    if not session_key:
        raise ArenaError("no_session")
    live = list(contenders_battling())
    if mode == Battle.Mode.NAMED:
        by_name = {c.name: c for c in live}
        if contender_a == contender_b or contender_a not in by_name or contender_b not in by_name:
            raise ArenaError("bad_contender")
        a, b = by_name[contender_a], by_name[contender_b]
    else:
        try:
            i, j = _pair_draw(live, rng or random.SystemRandom())
        except ValueError:
            raise ArenaError("no_contenders") from None
        a, b = live[i], live[j]
    key = visitor_key(session_key)
    visitor_touch(key=key)
    return Battle.objects.create(
        session_key=key, ip_key=network_key(ip), mode=mode, contender_a=a, contender_b=b
    )


def visitor_touch(*, key: str) -> None:
    """The visitor's row, created or marked seen: one upsert, safe when two
    of the visitor's sockets start battles at once."""
    Visitor.objects.bulk_create(
        [Visitor(key=key, last_seen_at=timezone.now())],
        update_conflicts=True,
        unique_fields=["key"],
        update_fields=["last_seen_at"],
    )


def visitors_expire(*, now: datetime | None = None) -> int:
    """Forget visitors not seen for the cookie's age (their cookie has
    expired too); returns how many rows went."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.ARENA_VISITOR_SECONDS)
    deleted, _ = Visitor.objects.filter(last_seen_at__lt=cutoff).delete()
    return deleted


def _pair_draw(live: list[Contender], rng: random.Random) -> tuple[int, int]:
    """Two indices into `live`: by admin weights alone, or (active sampling)
    also by how uncertain each pair's comparison still is."""
    weights = [c.weight for c in live]
    if settings.ARENA_SAMPLING != "active":
        return pair_sample(weights, rng)
    votes = pair_vote_records(max_age=settings.ARENA_SAMPLING_CACHE_SECONDS)
    records = {}
    for i, j in combinations(range(len(live)), 2):
        low, high = sorted((live[i].pk, live[j].pk))
        n, score_low = votes.get((low, high), (0, 0.0))
        if n:
            score_i = score_low if live[i].pk == low else n - score_low
            records[(i, j)] = PairRecord(votes=n, score_first=score_i)
    return pair_sample_active(weights, records, rng, explore=settings.ARENA_SAMPLING_EXPLORE)


def _current_answers(turn: Turn) -> dict[str, Answer]:
    return {a.side: a for a in turn.answers.filter(superseded=False)}


def _last_turn(battle: Battle) -> Turn | None:
    return battle.turns.order_by("-index").first()


def _require_open(battle: Battle) -> None:
    if battle.status != Battle.Status.OPEN:
        raise ArenaError("already_voted")


def _resolved_params(contender: Contender) -> dict[str, Any]:
    params: dict[str, Any] = {**DEFAULT_PARAMS, **(contender.params or {})}
    params.setdefault("max_tokens", settings.ARENA_MAX_NEW_TOKENS)
    return params


def _messages_fit(
    contender: Contender, *, exchanges: list[tuple[str, str]], text: str, params: dict[str, Any]
) -> PromptFit:
    """What `contender` is sent for `text` (inference.selectors.contender_messages);
    `prompt_too_long` when the new message cannot fit even alone."""
    fit = contender_messages(
        contender, exchanges=exchanges, text=text, max_tokens=int(params["max_tokens"])
    )
    if fit.messages is None:
        # Rounded down: the exact room would tell the length of a contender's
        # system prompt before the reveal.
        room = max(fit.room_tokens // 50 * 50, 0)
        raise ArenaError(
            "prompt_too_long",
            f"The message is too long: this battle's models take about {room} tokens at most "
            "(a token is a piece of a word; one character can take several).",
        )
    return fit


# A visitor told `busy` for answers in flight elsewhere tries again after this.
IN_FLIGHT_RETRY_SECONDS = 5


def turn_precheck(*, battle_id: uuid.UUID | str, session_key: str, text: str | None) -> None:
    """The cheap checks of a new turn (`text`) or of a regenerate (None), read
    only and without the battle's lock: the message's length, the battle's
    owner and state, the answers the visitor and their network have in
    flight. The consumer runs it before it pays for moderation; turn_send and
    turn_regenerate check again under the lock."""
    if text is not None:
        _require_prompt_chars(text.strip())
    battle = Battle.objects.filter(pk=battle_id).first()
    if battle is None:
        raise ArenaError("no_battle")
    _require_owner(battle, session_key)
    _require_open(battle)
    turn = _last_turn(battle)
    if turn is None and text is None:
        raise ArenaError("nothing_to_do")
    if turn is not None:
        if text is not None and turn.index + 1 >= settings.ARENA_MAX_TURNS:
            raise ArenaError("too_many_turns")
        current = _current_answers(turn).values()
        if any(not a.is_finished for a in current):
            raise ArenaError("busy")
        if text is not None and any(a.status == Answer.Status.ERROR for a in current):
            raise ArenaError("failed_turn")
    _require_capacity(battle)


def _require_prompt_chars(text: str) -> None:
    if not text:
        raise ArenaError("empty_prompt")
    if len(text) > settings.ARENA_MAX_PROMPT_CHARS:
        raise ArenaError(
            "prompt_too_long",
            f"The message is too long ({len(text)} characters; the limit is "
            f"{settings.ARENA_MAX_PROMPT_CHARS}).",
        )


def _require_capacity(battle: Battle) -> None:
    """Room for two more answers in flight (pending or streaming, across all
    battles) for the battle's visitor and for their network."""
    unfinished = Answer.objects.filter(status__in=[Answer.Status.PENDING, Answer.Status.STREAMING])
    caps = (
        (settings.ARENA_ANSWERS_IN_FLIGHT, "turn__battle__session_key", battle.session_key),
        (settings.ARENA_ANSWERS_IN_FLIGHT_PER_IP, "turn__battle__ip_key", battle.ip_key),
    )
    for cap, field, key in caps:
        if cap and key and unfinished.filter(**{field: key}).count() + 2 > cap:
            raise ArenaError(
                "busy",
                "Too many answers are being generated for you; wait for them to finish.",
                retry_after=IN_FLIGHT_RETRY_SECONDS,
            )


def turn_create(*, battle_id: uuid.UUID | str, session_key: str, text: str) -> list[Answer]:
    """turn_send's answers, without the state."""
    return turn_send(battle_id=battle_id, session_key=session_key, text=text)[0]


def turn_send(
    *, battle_id: uuid.UUID | str, session_key: str, text: str
) -> tuple[list[Answer], BattleStateEvent]:
    """Add the visitor's message as a new turn with a pending answer per side;
    also the battle's state with the new turn, built from the rows the turn
    was made from: no second read (a message from every visitor at once is
    the start of a load peak).

    Each side gets its own history: its own earlier answers, trimmed from the
    oldest exchange to fit its contender's context window.
    """
    text = text.strip()
    _require_prompt_chars(text)
    with transaction.atomic():
        battle = _battle_lock(battle_id)
        _require_owner(battle, session_key)
        _require_open(battle)
        turns = list(battle.turns.prefetch_related("answers"))
        if len(turns) >= settings.ARENA_MAX_TURNS:
            raise ArenaError("too_many_turns")
        history: dict[str, list[tuple[str, str]]] = {Side.A: [], Side.B: []}
        for turn in turns:
            current = {a.side: a for a in turn.answers.all() if not a.superseded}
            for side in (Side.A, Side.B):
                answer = current.get(side)
                if answer is None or not answer.is_finished:
                    raise ArenaError("busy")
                if answer.status == Answer.Status.ERROR:
                    raise ArenaError("failed_turn")
                history[side].append((turn.user_text, answer.text))
        # Both sides are measured before anything is written: a refused
        # message leaves no turn behind.
        sides = []
        for side in (Side.A, Side.B):
            contender = battle.contender(side)
            params = _resolved_params(contender)
            fit = _messages_fit(contender, exchanges=history[side], text=text, params=params)
            sides.append((side, contender, fit.messages, params))
        turn = Turn.objects.create(battle=battle, index=len(turns), user_text=text)
        answers = [
            Answer.objects.create(
                turn=turn, side=side, contender=contender, messages=messages, params=params
            )
            for side, contender, messages, params in sides
        ]
        earlier = [(t, t.answers.all()) for t in turns]
        return answers, battle_state_of(battle, [*earlier, (turn, answers)])


def turn_regenerate(*, battle_id: uuid.UUID | str, session_key: str) -> list[Answer]:
    """New answers for both sides of the last turn; the old ones are kept, superseded."""
    with transaction.atomic():
        battle = _battle_lock(battle_id)
        _require_owner(battle, session_key)
        _require_open(battle)
        turn = _last_turn(battle)
        if turn is None:
            raise ArenaError("nothing_to_do")
        current = _current_answers(turn)
        if any(not a.is_finished for a in current.values()):
            raise ArenaError("busy")
        Answer.objects.filter(turn=turn, superseded=False).update(superseded=True)
        return [
            Answer.objects.create(
                turn=turn,
                side=old.side,
                attempt=old.attempt + 1,
                contender=old.contender,
                messages=old.messages,
                params=old.params,
                # The same question gets the same passages: a regenerated
                # answer is compared on the model, not on the retrieval.
                passages=old.passages,
            )
            for old in sorted(current.values(), key=lambda a: a.side)
        ]


def answers_unfinished(*, battle_id: uuid.UUID | str, session_key: str) -> list[int]:
    """Ids of the answers a `stop` should cancel."""
    battle = Battle.objects.get(pk=battle_id)
    _require_owner(battle, session_key)
    ids = answers_stop(battle_id=battle.pk)
    if not ids:
        raise ArenaError("nothing_to_do")
    return ids


def answers_stop(*, battle_id: uuid.UUID | str) -> list[int]:
    """Stop a battle's unfinished answers: pending ones here, streaming ones
    by the cancel flags the caller sets for the ids returned (a `stop`, or
    nobody watching the battle any more)."""
    ids = list(
        Answer.objects.filter(
            turn__battle_id=battle_id,
            superseded=False,
            status__in=[Answer.Status.PENDING, Answer.Status.STREAMING],
        ).values_list("id", flat=True)
    )
    # A pending answer that no worker has claimed yet is stopped right here.
    Answer.objects.filter(id__in=ids, status=Answer.Status.PENDING).update(
        status=Answer.Status.STOPPED, finish_reason="stopped", finished_at=timezone.now()
    )
    return ids


def vote_record(*, battle_id: uuid.UUID | str, session_key: str, choice: str, ip: str = "") -> Vote:
    """Record the visitor's vote on the last turn and close the battle.

    Allowed once, and only when both current answers of the last turn are
    finished without error and both have text (a stopped answer with some
    text counts; one stopped before its first token does not). A vote over
    the network's daily cap is kept, flagged `over_cap` here; ratings
    annotates the committed vote (categories, style, identity leaks, the
    visitor's own cap) in its task. A retry (the same choice again) is acknowledged
    with the vote already recorded, never counted twice. The unique
    constraint on the battle is the final word on "once", even for a retry
    racing its original.
    """
    if choice not in Vote.Choice.values:
        raise ArenaError("invalid_choice")
    with transaction.atomic():
        battle = _battle_lock(battle_id)
        _require_owner(battle, session_key)
        if battle.status != Battle.Status.OPEN:
            return _vote_replayed(battle, choice)
        turn = _last_turn(battle)
        if turn is None:
            raise ArenaError("not_ready")
        current = _current_answers(turn)
        if len(current) != 2 or any(not a.is_finished for a in current.values()):
            raise ArenaError("not_ready")
        if any(a.status == Answer.Status.ERROR for a in current.values()):
            raise ArenaError("failed_turn")
        if any(not a.text.strip() for a in current.values()):
            raise ArenaError("empty_answer")
        ip_key = network_key(ip)
        try:
            with transaction.atomic():
                vote = Vote.objects.create(
                    battle=battle,
                    turn=turn,
                    contender_a=battle.contender_a,
                    contender_b=battle.contender_b,
                    choice=choice,
                    session_key=visitor_key(session_key),
                    ip_key=ip_key,
                    anonymous=battle.mode == Battle.Mode.ANONYMOUS,
                )
        except IntegrityError:
            return _vote_replayed(battle, choice)
        Battle.objects.filter(pk=battle.pk).update(status=Battle.Status.VOTED)
        if _network_over_cap(ip_key):
            Vote.objects.filter(pk=vote.pk).update(over_cap=True)
            vote.over_cap = True
        # Ratings annotates the vote after the lock is gone. A broker that is
        # down must not turn a committed vote into an error: the next refresh
        # annotates what no task did.
        transaction.on_commit(functools.partial(_vote_counted, vote_id=vote.pk), robust=True)
        return vote


def _vote_replayed(battle: Battle, choice: str) -> Vote:
    """The battle's vote again when this is a retry of it (same visitor, same
    choice: its first acknowledgement may have been lost), else already_voted."""
    vote = Vote.objects.filter(battle=battle).first()
    if vote is None or vote.choice != choice:
        raise ArenaError("already_voted")
    return vote


def _network_over_cap(ip_key: str) -> bool:
    """Count the vote against its network's cap for the day (in Redis, shared
    by every web process): past it, the vote is kept but left out of ratings."""
    if not ip_key:
        return False
    return daily_hit(key=f"votes:{ip_key}") > settings.ARENA_IP_DAILY_VOTE_CAP


# Ratings' task for a committed vote, queued by name: arena imports no ratings.
VOTE_COUNTED_TASK = "ratings.tasks.vote_counted"


def _vote_counted(*, vote_id: int) -> None:
    """Hand a committed vote to ratings: on the ratings queue, or (embedded
    default) in a thread of this process, which is its own worker and finds
    the task by name as a worker does, in Celery's registry."""
    if settings.ARENA_TASKS == "celery":
        try:
            current_app.send_task(
                VOTE_COUNTED_TASK,
                kwargs={"vote_id": vote_id},
                queue=settings.ARENA_QUEUE_RATINGS,
                retry=False,
            )
        except Exception as exc:
            # The vote is saved: the broker being away must not fail the
            # visitor's vote. Ratings' refresh annotates votes no task did.
            log.warning(
                "vote %s not queued for ratings (%r); the refresh will count it", vote_id, exc
            )
        return
    if VOTE_COUNTED_TASK not in current_app.tasks:
        current_app.loader.import_default_modules()  # Celery's lazy autodiscovery
    task = current_app.tasks[VOTE_COUNTED_TASK]
    daemon("vote-counted", functools.partial(task.apply, kwargs={"vote_id": vote_id}, throw=True))


def _require_owner(battle: Battle, session_key: str) -> None:
    if not session_key or battle.session_key != visitor_key(session_key):
        raise ArenaError("forbidden")


# --- generation bookkeeping (called by inference's task) ------------------


def answer_start(*, answer_id: int) -> Answer | None:
    """Move a pending answer to streaming (the claim: a conditional UPDATE)
    and return it with what its generation reads (contender, endpoint,
    knowledge base, judge); None if someone else has it, or it was stopped or
    superseded meanwhile. inference.jobs makes the generation's job of it."""
    claimed = Answer.objects.filter(
        pk=answer_id, status=Answer.Status.PENDING, superseded=False
    ).update(status=Answer.Status.STREAMING, started_at=timezone.now(), heartbeat_at=timezone.now())
    if not claimed:
        return None
    return Answer.objects.select_related(
        "turn", "contender__endpoint", "contender__knowledge_base", "contender__rag_judge"
    ).get(pk=answer_id)


def answer_passages_save(
    *, answer_id: int, passages: list[dict[str, Any]], messages: Sequence[Mapping[str, object]]
) -> None:
    """Keep what a RAG answer was given: the passages and the exact messages
    sent with them."""
    Answer.objects.filter(pk=answer_id).update(passages=passages, messages=messages)


# Errors about the values, not the database: PostgreSQL refuses a NUL in a
# text column (DataError), and no driver encodes a lone surrogate
# (UnicodeEncodeError, raised before anything is sent).
DATA_ERRORS = (DataError, UnicodeEncodeError)
log = logging.getLogger(__name__)


def answers_progress(*, texts: dict[int, str | None]) -> int:
    """Save the partial texts of streaming answers (None: unchanged), so a
    reconnect resyncs to them; it is also their worker's heartbeat. One
    statement for all of a worker's answers; when the database refuses one
    row's text, row by row, so that row never stops the others' heartbeats
    (the reaper would fail them all). Returns the rows updated.

    No savepoint around the statement: the worker calls this in autocommit,
    and the refusals that happen (NUL, lone surrogates) are raised by the
    driver before anything is sent."""
    if not texts:
        return 0
    try:
        return _progress_update(texts)
    except DATA_ERRORS as exc:
        log.warning("progress of %d answers refused (%r); saving row by row", len(texts), exc)
    return sum(_progress_row(answer_id, text) for answer_id, text in texts.items())


def _progress_row(answer_id: int, text: str | None) -> int:
    try:
        return _progress_update({answer_id: text})
    except DATA_ERRORS as exc:
        log.warning("answer %s: partial text refused (%r); heartbeat only", answer_id, exc)
    return _progress_update({answer_id: None})


def _progress_update(texts: dict[int, str | None]) -> int:
    # Written out, not built with Case(When(...)): the ORM compiles each When
    # on its own (tens of ms for the hundreds of answers of one worker, with
    # the GIL held while the worker's streams wait; bench/load.py).
    quote = connection.ops.quote_name
    meta = Answer._meta
    columns = {field.name: str(field.column) for field in meta.concrete_fields}
    pk, text, beat, status = (quote(columns[n]) for n in ("id", "text", "heartbeat_at", "status"))
    params: list[Any] = [connection.ops.adapt_datetimefield_value(timezone.now())]
    sets = [f"{beat} = %s"]
    changed = [(answer_id, t) for answer_id, t in texts.items() if t is not None]
    if changed:
        whens = " ".join(["WHEN %s THEN %s"] * len(changed))
        sets.append(f"{text} = CASE {pk} {whens} ELSE {text} END")
        params += [value for pair in changed for value in pair]
    marks = ", ".join(["%s"] * len(texts))
    params += [*texts, Answer.Status.STREAMING.value]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} "
        f"WHERE {pk} IN ({marks}) AND {status} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


@dataclass(frozen=True)
class Reaped:
    battle_id: str
    turn: int
    side: str
    attempt: int
    code: str
    message: str


REAP_REASONS = {
    "worker_lost": "The worker generating this answer stopped; regenerate to try again.",
    "not_started": "No worker picked this answer up in time; regenerate to try again.",
}


def answers_reap(*, stale_after: float, pending_after: float) -> list[Reaped]:
    """Fail answers whose worker went silent (killed, or its machine gone) and
    answers no worker ever claimed, so no battle stays stuck. Each is failed
    by a conditional UPDATE: a worker that comes back cannot overwrite it."""
    now = timezone.now()
    stale = Q(status=Answer.Status.STREAMING, heartbeat_at__lt=now - timedelta(seconds=stale_after))
    unclaimed = Q(
        status=Answer.Status.PENDING, created_at__lt=now - timedelta(seconds=pending_after)
    )
    reaped = []
    for code, condition in (("worker_lost", stale), ("not_started", unclaimed)):
        rows = list(
            Answer.objects.filter(condition, superseded=False).values_list(
                "id", "turn__battle_id", "turn__index", "side", "attempt"
            )
        )
        for answer_id, battle_id, turn, side, attempt in rows:
            failed = Answer.objects.filter(condition, pk=answer_id).update(
                status=Answer.Status.ERROR,
                finish_reason="error",
                error_code=code,
                error_message=REAP_REASONS[code],
                finished_at=now,
            )
            if failed:
                reaped.append(Reaped(str(battle_id), turn, side, attempt, code, REAP_REASONS[code]))
    return reaped


@dataclass(frozen=True)
class AnswerOutcome:
    status: str
    text: str
    finish_reason: str = ""
    prompt_tokens: int | None = None
    tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None
    error_code: str = ""
    error_message: str = ""


def answer_complete(*, answer_id: int, outcome: AnswerOutcome) -> AnswerOutcome | None:
    """Save the final text and stats: the outcome saved, None if the answer
    was already finished. An outcome the database refuses (a text it cannot
    store) fails the answer instead (`bad_output`, the returned outcome), so
    it never stays streaming until the reaper."""
    try:
        with transaction.atomic():
            return outcome if _outcome_save(answer_id, outcome) else None
    except DATA_ERRORS as exc:
        log.error("answer %s: outcome refused by the database (%r); failing it", answer_id, exc)
        failed = dataclasses.replace(
            outcome,
            status=Answer.Status.ERROR,
            text="",
            finish_reason="error",
            error_code="bad_output",
            error_message=f"The outcome could not be saved: {type(exc).__name__}: {exc}",
        )
        return failed if _outcome_save(answer_id, failed) else None


def _outcome_save(answer_id: int, outcome: AnswerOutcome) -> bool:
    finished_at: datetime = timezone.now()
    return bool(
        Answer.objects.filter(pk=answer_id)
        .filter(Q(status=Answer.Status.STREAMING) | Q(status=Answer.Status.PENDING))
        .update(
            status=outcome.status,
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            tokens=outcome.tokens,
            ttft_ms=outcome.ttft_ms,
            duration_ms=outcome.duration_ms,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            finished_at=finished_at,
        )
    )
