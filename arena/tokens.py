"""API tokens: made once, stored hashed, checked in constant time."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import User
from django.utils import timezone

from arena.models import ApiToken

PREFIX = "arena_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(*, user: User, name: str) -> str:
    """A new token for `user`; the only time its clear text exists."""
    token = PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, token_hash=_digest(token))
    return token


def api_token_user(token: str) -> User | None:
    """The active user a token belongs to, or None."""
    if not token.startswith(PREFIX):
        return None
    found = ApiToken.objects.select_related("user").filter(token_hash=_digest(token)).first()
    if found is None or not found.user.is_active:
        return None
    ApiToken.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
    return found.user
