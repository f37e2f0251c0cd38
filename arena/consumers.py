"""The battle websocket: parse an event, call one service, send the result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any
from urllib.parse import parse_qs

import kombu.exceptions
import redis.exceptions
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings
from django.db import InterfaceError, OperationalError

from arena import services
from arena.events import (
    ERROR_CODES,
    ArenaError,
    BattleResume,
    BattleStart,
    ClientEvent,
    ErrorEvent,
    MessageSend,
    Regenerate,
    ServerEvent,
    Stop,
    VoteCast,
    battle_group,
    client_event_parse,
    error_event,
)
from arena.hub import BattleHub, battle_hub
from arena.models import Answer, Battle
from arena.moderation import prompt_moderate
from arena.outbox import Outbox
from arena.ratelimit import client_ip, rate_check
from arena.reaper import reaper_ensure
from arena.selectors import battle_state, vote_reveal
from inference.dispatch import NotQueued, generation_cancel, generation_start

log = logging.getLogger(__name__)
# Redis (channel layer, broker, limits, cancel flags) or the database is down
# for a moment: the visitor is told to retry; the socket stays open.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    OperationalError,
    InterfaceError,
    OSError,
)
LAYER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
UNAVAILABLE_RETRY_SECONDS = 5
RATE_ACTIONS: dict[type, str] = {
    BattleStart: "battle",
    MessageSend: "message",
    Regenerate: "regenerate",
    VoteCast: "vote",
}


@database_sync_to_async
def _battle_owned(battle_id: str, session_key: str) -> uuid.UUID:
    try:
        pk = uuid.UUID(battle_id)
        owner = Battle.objects.values_list("session_key", flat=True).get(pk=pk)
    except (ValueError, Battle.DoesNotExist):
        raise ArenaError("no_battle") from None
    if owner != session_key:
        raise ArenaError("forbidden")
    return pk


class BattleConsumer(AsyncJsonWebsocketConsumer):
    battle_id: uuid.UUID | None = None
    session_key: str = ""
    outbox: Outbox | None = None
    hub: BattleHub | None = None
    _resyncing: asyncio.Task[None] | None = None
    _frame_send: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        layer = get_channel_layer(self.channel_layer_alias)
        hub = battle_hub(layer) if layer is not None else None
        self._frame_send = _session_free(send)
        if hub is None:
            await super().__call__(scope, receive, send)
            return
        # Battle events come through the hub (arena.hub): the socket needs no
        # channel of its own in the layer (a subscription less per socket),
        # and Channels' dispatch loop waits on the client alone.
        self.scope = scope
        self.channel_layer = layer
        self.hub = hub
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch([receive], self.dispatch)

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.outbox = Outbox(
            self._write, batch=query.get("batch") == ["1"], gather=settings.ARENA_SOCKET_GATHER
        )
        session = self.scope.get("session")
        self.session_key = (session.session_key if session is not None else None) or ""
        peer = self.scope.get("client") or ("", 0)
        headers = dict(self.scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        self.client_ip = client_ip(str(peer[0] or ""), forwarded, settings.ARENA_TRUSTED_PROXIES)
        reaper_ensure()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.outbox is not None:
            self.outbox.close()
        try:
            await self._unwatch()
        except LAYER_ERRORS:
            log.warning("could not leave the battle group (channel layer down)")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            event = client_event_parse(text_data)
            if not self.session_key:
                raise ArenaError("no_session")
            await self.handle(event)
        except ArenaError as err:
            await self.send_json(error_event(err))
        except UNAVAILABLE as exc:
            log.warning("websocket event failed, a service is unavailable: %r", exc)
            await self.send_json(_unavailable())
        except Exception:
            log.exception("websocket event failed")
            await self.send_json(
                {"type": "error", "code": "internal", "message": "Something went wrong; try again."}
            )

    async def _limit(self, event: ClientEvent) -> None:
        action = RATE_ACTIONS.get(type(event))
        if action is None:
            return
        verdict = await sync_to_async(rate_check, thread_sensitive=False)(
            action=action, visitor=self.session_key, ip=self.client_ip
        )
        if not verdict.allowed:
            raise ArenaError(
                "rate_limited",
                f"Too many requests; try again in {verdict.retry_after} s.",
                retry_after=verdict.retry_after,
            )

    async def handle(self, event: ClientEvent) -> None:
        key = self.session_key
        await self._limit(event)
        if isinstance(event, BattleStart):
            battle = await database_sync_to_async(services.battle_create)(
                session_key=key,
                mode=event.mode,
                contender_a=event.contender_a,
                contender_b=event.contender_b,
            )
            await self._watch(battle.id)
            await self.send_json(await self._state())
            return
        if isinstance(event, BattleResume):
            await self._watch(await _battle_owned(event.battle, key))
            await self.send_json(await self._state())
            return
        battle_id = self._current()
        if isinstance(event, MessageSend):
            decision = await sync_to_async(prompt_moderate, thread_sensitive=False)(event.text)
            if decision.flagged:
                log.info(
                    "prompt refused by moderation (%s) for battle %s", decision.reason, battle_id
                )
                raise ArenaError("moderated")
            answers, state = await database_sync_to_async(services.turn_send)(
                battle_id=battle_id, session_key=key, text=event.text
            )
            await self._broadcast(state)
            await self._generate(answers)
        elif isinstance(event, Regenerate):
            answers = await database_sync_to_async(services.turn_regenerate)(
                battle_id=battle_id, session_key=key
            )
            await self._broadcast(await self._state())
            await self._generate(answers)
        elif isinstance(event, Stop):
            ids = await database_sync_to_async(services.answers_unfinished)(
                battle_id=battle_id, session_key=key
            )
            await generation_cancel(ids)
            await self._broadcast(await self._state())
        elif isinstance(event, VoteCast):
            vote = await database_sync_to_async(services.vote_record)(
                battle_id=battle_id, session_key=key, choice=event.choice
            )
            reveal = await database_sync_to_async(vote_reveal)(battle_id=vote.battle_id)
            await self._broadcast(reveal)
            await self._broadcast(await self._state())

    async def _generate(self, answers: list[Answer]) -> None:
        """Queue the answers; those that cannot be queued (the broker is down)
        are failed at once, so none waits for the reaper."""
        engines = {a.pk: a.contender.engine for a in answers}
        try:
            await generation_start(list(engines), engines)
        except NotQueued as exc:
            if not isinstance(exc.cause, UNAVAILABLE):
                raise exc.cause from None
            log.warning("could not queue answers %s: %r", exc.answer_ids, exc.cause)
            for pk in exc.answer_ids:
                await database_sync_to_async(services.answer_complete)(
                    answer_id=pk,
                    outcome=services.AnswerOutcome(
                        status=Answer.Status.ERROR,
                        text="",
                        finish_reason="error",
                        error_code="unavailable",
                        error_message=ERROR_CODES["unavailable"],
                    ),
                )
            await self._broadcast(await self._state())
            raise ArenaError("unavailable", retry_after=UNAVAILABLE_RETRY_SECONDS) from None

    # --- frames -----------------------------------------------------------

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Every text frame goes through the outbox: in order with the relayed events."""
        if text_data is not None and not close and self.outbox is not None:
            await self.outbox.send(text_data)
            return
        await super().send(text_data, bytes_data, close)

    async def _write(self, text: str) -> None:
        await (self._frame_send or self.base_send)({"type": "websocket.send", "text": text})

    def deliver(self, text: str) -> None:
        """A battle event from the hub (arena.hub), already JSON."""
        if self.outbox is not None:
            self.outbox.push(text)

    def resync(self) -> None:
        """The hub lost Redis for a while: events may be missing; send the saved state."""
        if self.battle_id is not None and (self._resyncing is None or self._resyncing.done()):
            self._resyncing = asyncio.get_running_loop().create_task(self._resync())

    async def _resync(self) -> None:
        try:
            await self.send_json(await self._state())
        except Exception as exc:  # the page's own resume covers it
            log.warning("resync after a Redis reconnect failed: %r", exc)

    # --- group plumbing ---------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, on
        # the server's one thread for synchronous work; a relayed event touches
        # no database, and under load that hop serialised every gen.delta of
        # every socket (bench/load.py). Relay events straight to the outbox.
        if message.get("type") == "battle.event":
            text = message.get("text")  # a worker's event, already encoded
            self.deliver(text if text is not None else json.dumps(message["event"]))
            return
        await super().dispatch(message)

    async def battle_event(self, message: dict[str, Any]) -> None:
        """A server event published to this battle's group (by a worker or a peer)."""
        await self.dispatch(message)

    def _current(self) -> uuid.UUID:
        if self.battle_id is None:
            raise ArenaError("no_battle", "Start a battle first.")
        return self.battle_id

    async def _watch(self, battle_id: uuid.UUID) -> None:
        if self.battle_id == battle_id:
            return
        await self._unwatch()
        # Watching only once the group is joined: a failed join is retried by
        # the visitor's next battle.resume instead of being taken as done.
        if self.hub is not None:
            await self.hub.join(battle_group(battle_id), self)
        else:
            await self.channel_layer.group_add(battle_group(battle_id), self.channel_name)
        self.battle_id = battle_id

    async def _unwatch(self) -> None:
        if self.battle_id is not None:
            battle_id, self.battle_id = self.battle_id, None
            if self.hub is not None:
                self.hub.leave(battle_group(battle_id), self)
            else:
                await self.channel_layer.group_discard(battle_group(battle_id), self.channel_name)

    async def _state(self) -> ServerEvent:
        return await database_sync_to_async(battle_state)(battle_id=self._current())

    async def _broadcast(self, event: ServerEvent) -> None:
        try:
            await self.channel_layer.group_send(
                battle_group(self._current()), {"type": "battle.event", "text": json.dumps(event)}
            )
        except LAYER_ERRORS as exc:
            # The channel layer is down: this visitor still hears what was
            # saved (a vote is acknowledged); other tabs resync later.
            log.warning("channel layer unavailable, replying to this socket only: %r", exc)
            await self.send_json(event)


def _session_free(send: Any) -> Any:
    """The server's own `send` under Channels' session middleware: its wrapper
    saves the session and sets the cookie on HTTP responses; a websocket frame
    carries neither, and its checks cost every frame a few microseconds."""
    wrapper = getattr(send, "__self__", None)
    real = getattr(wrapper, "real_send", None)
    if type(wrapper).__name__ == "InstanceSessionWrapper" and real is not None:
        return real
    return send


def _unavailable() -> ErrorEvent:
    return error_event(ArenaError("unavailable", retry_after=UNAVAILABLE_RETRY_SECONDS))
