"""The one transport from workers to sockets: battle events from the process
that makes them (a Celery worker, or a generation thread of the web process)
to every socket watching the battle.

- `realtime.publisher.Publisher`: a generation's sends (pipelined PUBLISH to
  Redis, or the in-memory layer's group_send on the web server's loop).
- `realtime.hub`: a web process's battle subscriptions on one Redis
  connection per shard, handing each event's text to the sockets' sinks.
- `realtime.outbox.Outbox`: a socket's frames, in order, batched.

This package imports nothing of the apps; it is the only place that knows
Redis' wire format and channels_redis' internals (`realtime.hub.PubSubLayer`).
"""


def battle_group(battle_id: object) -> str:
    """The channel-layer group every socket watching a battle joins."""
    return f"battle.{battle_id}".replace("-", "")
