"""The battle websocket: parse an event, call one service, send the result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
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
    client_event_parse,
    error_event,
)
from arena.models import Answer, Battle
from arena.moderation import prompt_moderate_bounded
from arena.ratelimit import TokenBucket, client_ip, rate_check
from arena.reaper import reaper_ensure
from arena.selectors import battle_state, vote_reveal
from arena.visitors import COOKIE, visitor_from_cookie, visitor_key
from arena.watchers import Watchers, loop_watchers
from inference.dispatch import NotQueued, generation_cancel, generation_start
from realtime import battle_group
from realtime.hub import BattleHub, battle_hub
from realtime.outbox import Outbox
from realtime.publisher import publish

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
    BattleResume: "resume",
    MessageSend: "message",
    Regenerate: "regenerate",
    Stop: "stop",
    VoteCast: "vote",
}
# Close codes (4000 + the HTTP status that says it best).
CLOSE_FLOOD = 4429  # kept sending far past its frame rate
CLOSE_TOO_MANY_SOCKETS = 4409  # the visitor has ARENA_SOCKETS_PER_VISITOR open already


@database_sync_to_async
def _battle_owned(battle_id: str, session_key: str) -> uuid.UUID:
    try:
        pk = uuid.UUID(battle_id)
        owner = Battle.objects.values_list("session_key", flat=True).get(pk=pk)
    except (ValueError, Battle.DoesNotExist):
        raise ArenaError("no_battle") from None
    if owner != visitor_key(session_key):
        raise ArenaError("forbidden")
    return pk


class BattleConsumer(AsyncJsonWebsocketConsumer):
    battle_id: uuid.UUID | None = None
    session_key: str = ""  # the visitor id (arena.visitors); "" without a valid cookie
    visitor_key: str = ""  # its keyed hash: what the database and the counters see
    outbox: Outbox | None = None
    hub: BattleHub | None = None
    _resyncing: asyncio.Task[None] | None = None
    _frame_send: Any = None
    bucket: TokenBucket
    watchers: Watchers | None = None
    _visitor_counted = False
    _flooded = False  # closed for flooding: later frames are not even read
    _quiet_until = 0.0  # refused frames get no reply before this (monotonic)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        layer = get_channel_layer(self.channel_layer_alias)
        hub = battle_hub(layer) if layer is not None else None
        self._frame_send = _session_free(send)
        if hub is None:
            await super().__call__(scope, receive, send)
            return
        # Battle events come through the hub (realtime.hub): the socket needs no
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
            self._write,
            batch=query.get("batch") == ["1"],
            gather=settings.ARENA_SOCKET_GATHER_MS / 1000,
            max_events=settings.ARENA_SOCKET_OUTBOX_EVENTS,
            max_bytes=settings.ARENA_SOCKET_OUTBOX_BYTES,
            on_overflow=self.resync,
        )
        self.bucket = TokenBucket(
            rate=settings.ARENA_SOCKET_EVENTS_PER_SECOND,
            burst=settings.ARENA_SOCKET_EVENTS_BURST,
            now=time.monotonic(),
        )
        cookies = self.scope.get("cookies") or {}
        self.session_key = visitor_from_cookie(cookies.get(COOKIE)) or ""
        self.visitor_key = visitor_key(self.session_key)
        peer = self.scope.get("client") or ("", 0)
        headers = dict(self.scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        self.client_ip = client_ip(str(peer[0] or ""), forwarded, settings.ARENA_TRUSTED_PROXIES)
        reaper_ensure()
        self.watchers = loop_watchers(_orphan_stop)
        await self.accept()
        if self.visitor_key:
            if not self.watchers.visitor_enter(self.visitor_key):
                await self._refuse_socket()
                return
            self._visitor_counted = True

    async def _refuse_socket(self) -> None:
        limit = settings.ARENA_SOCKETS_PER_VISITOR
        message = f"You have {limit} windows open already; close one and reload."
        await self.send_json(error_event(ArenaError("too_many_sockets", message)))
        await self.close(code=CLOSE_TOO_MANY_SOCKETS)

    async def disconnect(self, code: int) -> None:
        if self.outbox is not None:
            self.outbox.close()
        if self._visitor_counted and self.watchers is not None:
            self._visitor_counted = False
            self.watchers.visitor_leave(self.visitor_key)
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
            await self.send_json(error_event(ArenaError("internal")))

    async def _limit(self, event: ClientEvent) -> None:
        action = RATE_ACTIONS.get(type(event))
        if action is None:
            return
        verdict = await sync_to_async(rate_check, thread_sensitive=False)(
            action=action, visitor=self.visitor_key, ip=self.client_ip
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
                ip=self.client_ip,
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
            # The cheap checks first: a prompt that would be refused anyway
            # never costs a moderation call.
            await database_sync_to_async(services.turn_precheck)(
                battle_id=battle_id, session_key=key, text=event.text
            )
            decision = await prompt_moderate_bounded(event.text)
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
            await database_sync_to_async(services.turn_precheck)(
                battle_id=battle_id, session_key=key, text=None
            )
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
                battle_id=battle_id, session_key=key, choice=event.choice, ip=self.client_ip
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
        """A battle event from the hub (realtime.hub), already JSON."""
        if self.outbox is not None:
            self.outbox.push(text)

    def resync(self) -> None:
        """Events may be missing (the hub lost Redis for a while, or the
        outbox dropped them for a reader too far behind): send the saved state."""
        if self.battle_id is None:
            if self.outbox is not None:
                self.outbox.pushes_take()  # nothing is watched: nothing to resync
            return
        if self._resyncing is None or self._resyncing.done():
            self._resyncing = asyncio.get_running_loop().create_task(self._resync())

    async def _resync(self) -> None:
        outbox = self.outbox
        try:
            # Again if the outbox overflowed once more while the state was written.
            while outbox is not None and not outbox.closed:
                await outbox.resync(json.dumps(await self._state()))
                if not outbox.stale:
                    return
        except Exception as exc:  # the page's own resume covers it
            log.warning("resync failed: %r", exc)

    # --- group plumbing ---------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, on
        # the server's one thread for synchronous work; a relayed event touches
        # no database, and under load that hop serialised every gen.delta of
        # every socket (bench/load.py). Relay events straight to the outbox.
        kind = message.get("type")
        if kind == "battle.event":
            self.deliver(message["text"])  # already encoded (realtime.publisher)
            return
        if kind == "websocket.receive":
            # Every frame takes a token first, whatever it holds (bad JSON and
            # binary included); and no close_old_connections hop either: the
            # handlers' database_sync_to_async make it around each call.
            if self._flooded:
                return
            if self.bucket.take(time.monotonic()):
                await self.websocket_receive(message)
            else:
                await self._frame_refused()
            return
        await super().dispatch(message)

    async def _frame_refused(self) -> None:
        """At most one `rate_limited` a second (or per refill period, when
        that is longer), the other refused frames unanswered: a flood's replies
        are no flood. A socket far past its rate is closed."""
        bucket = self.bucket
        if bucket.overdraft > settings.ARENA_SOCKET_FLOOD_EVENTS:
            self._flooded = True
            log.info("socket of %s closed: far past its frame rate", self.client_ip)
            message = "Too many messages; the connection is closed."
            await self.send_json(error_event(ArenaError("rate_limited", message, retry_after=1)))
            await self.close(code=CLOSE_FLOOD)
            return
        now = time.monotonic()
        if now < self._quiet_until:
            return
        self._quiet_until = now + max(1.0, 1.0 / bucket.rate)
        retry = bucket.retry_after()
        message = f"Too many messages; try again in {retry} s."
        await self.send_json(error_event(ArenaError("rate_limited", message, retry_after=retry)))

    def _current(self) -> uuid.UUID:
        if self.battle_id is None:
            raise ArenaError("no_battle", "Start a battle first.")
        return self.battle_id

    async def _watch(self, battle_id: uuid.UUID) -> None:
        if self.battle_id == battle_id:
            return
        assert self.watchers is not None
        if not self.watchers.battle_enter(str(battle_id), self):
            limit = settings.ARENA_SOCKETS_PER_BATTLE
            raise ArenaError(
                "too_many_sockets", f"This battle is open in {limit} windows already; close one."
            )
        try:
            await self._unwatch()
            # Watching only once the group is joined: a failed join is retried
            # by the visitor's next battle.resume instead of being taken as done.
            if self.hub is not None:
                await self.hub.join(battle_group(battle_id), self)
            else:
                await self.channel_layer.group_add(battle_group(battle_id), self.channel_name)
        except BaseException:
            self.watchers.battle_leave(str(battle_id), self)
            raise
        self.battle_id = battle_id

    async def _unwatch(self) -> None:
        if self.battle_id is not None:
            battle_id, self.battle_id = self.battle_id, None
            if self.watchers is not None:
                self.watchers.battle_leave(str(battle_id), self)
            if self.hub is not None:
                self.hub.leave(battle_group(battle_id), self)
            else:
                await self.channel_layer.group_discard(battle_group(battle_id), self.channel_name)

    async def _state(self) -> ServerEvent:
        return await database_sync_to_async(battle_state)(battle_id=self._current())

    async def _broadcast(self, event: ServerEvent) -> None:
        try:
            await publish(self._current(), event)
        except LAYER_ERRORS as exc:
            # The channel layer is down: this visitor still hears what was
            # saved (a vote is acknowledged); other tabs resync later.
            log.warning("channel layer unavailable, replying to this socket only: %r", exc)
            await self.send_json(event)


async def _orphan_stop(battle: str) -> None:
    """Nobody has watched the battle for ARENA_ORPHAN_GRACE_SECONDS: its
    unfinished answers stop, as with the visitor's `stop` (arena.watchers)."""
    ids = await database_sync_to_async(services.answers_stop)(battle_id=battle)
    if ids:
        log.info("battle %s is watched by no one: stopping answers %s", battle, ids)
        await generation_cancel(ids)


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
