"""Typed readers for settings that come from the environment.

Each one fails loudly with `ImproperlyConfigured` naming the variable, so a
typo in a deployment stops start-up instead of silently running a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_retired(renamed: Mapping[str, str], fixed: Mapping[str, str]) -> None:
    """Stop start-up if a variable that is no longer read is set: a renamed one
    (`renamed`: old name -> new name) or a tuning knob that became a fixed
    setting (`fixed`: old name -> the setting). Otherwise a deployment that set
    it would run a default without a word."""
    for old, new in renamed.items():
        if old in os.environ:
            raise ImproperlyConfigured(f"{old} was renamed: set {new} instead")
    for old, setting in fixed.items():
        if old in os.environ:
            raise ImproperlyConfigured(
                f"{old} is no longer read from the environment: unset it "
                f"({setting} is a fixed setting; a settings module may override it)"
            )


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def key_variable_refusal(name: str, *, prefix: str) -> str:
    """Why the environment variable `name` may not be read as an API key ("" if
    it may). The key is sent to a server that staff configure: only variables
    under `prefix` qualify, and never the arena's own secrets (its secret key,
    database and broker URLs, which carry passwords)."""
    if not ENV_NAME.match(name):
        return f"{name!r} is not an environment variable name (letters, digits, _)."
    if name == "DJANGO_SECRET_KEY" or name.upper().endswith("_URL"):
        return (
            f"{name} holds a secret of the arena itself and is never sent as an API key: "
            f"put the key in a variable whose name starts with {prefix} (ARENA_KEY_PREFIX)."
        )
    if not name.startswith(prefix):
        return (
            f"{name} is not allowed: API keys are read only from variables whose names "
            f"start with {prefix} (ARENA_KEY_PREFIX), e.g. {prefix}VLLM."
        )
    return ""


def env_key_prefix(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip()
    if not value or not ENV_NAME.match(value):
        raise ImproperlyConfigured(
            f"{name} must be the non-empty start of a variable name (letters, digits, _), "
            f"got {value!r}"
        )
    return value


def env_key_variable(name: str, *, prefix: str) -> str:
    """The name of the variable that holds an API key, or "" when unset."""
    value = os.environ.get(name, "").strip()
    refusal = key_variable_refusal(value, prefix=prefix) if value else ""
    if refusal:
        raise ImproperlyConfigured(f"{name}: {refusal}")
    return value


def env_networks(name: str) -> list[str]:
    """Comma-separated IP addresses or networks ("10.0.0.0/8, ::1"), each checked."""
    items = env_list(name, [])
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not an IP address or network"
            ) from None
    return items


def env_url(name: str, *, schemes: tuple[str, ...]) -> str:
    """A URL with one of `schemes`, or "" when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ImproperlyConfigured(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"got {raw!r}"
        )
    return raw


@dataclass(frozen=True)
class Limit:
    count: int
    seconds: int


def env_limits(name: str, default: str) -> dict[str, Limit]:
    """ "battle=20/60,message=30/60" -> {"battle": Limit(20, 60), ...}; "" -> none."""
    raw = os.environ.get(name, default)
    out: dict[str, Limit] = {}
    for item in filter(None, (x.strip() for x in raw.split(","))):
        try:
            action, spec = item.split("=")
            count, seconds = spec.split("/")
            limit = Limit(int(count), int(seconds))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not ACTION=COUNT/SECONDS (e.g. message=30/60)"
            ) from None
        if limit.count < 1 or limit.seconds < 1:
            raise ImproperlyConfigured(f"{name}: {item!r} needs a positive count and window")
        out[action.strip()] = limit
    return out


def env_patterns_file(name: str) -> list[str]:
    """Regular expressions, one per line, from the file the variable names."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return []
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ImproperlyConfigured(f"{name}: no such file {raw!r}")
    patterns = [line.strip() for line in path.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ImproperlyConfigured(f"{name}: bad pattern {pattern!r}: {exc}") from None
    return patterns
