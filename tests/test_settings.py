"""Settings come from the environment; a bad value names its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.ARENA_TASKS, settings.DATABASES['default']['ENGINE'])"
)


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "ARENA_TASKS"}
    }
    base.update(ARENA_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="arena.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_nothing_set_runs_the_embedded_default(tmp_path: Path) -> None:
    result = _start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["thread", "django.db.backends.sqlite3"]


def test_database_and_redis_urls_switch_to_the_services(tmp_path: Path) -> None:
    result = _start(
        tmp_path, DATABASE_URL="postgres://u@db:5432/arena", REDIS_URL="redis://r:6379/0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["celery", "django.db.backends.postgresql"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://nope"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("ARENA_MAX_TURNS", "many"),
        ("ARENA_MAX_TURNS", "0"),
        ("DJANGO_DEBUG", "perhaps"),
        ("ARENA_TASKS", "cron"),
        ("ARENA_DELTA_INTERVAL_MS", "fast"),
    ],
)
def test_a_bad_value_stops_start_up_and_names_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    result = _start(tmp_path, **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]


def test_celery_tasks_without_redis_is_refused(tmp_path: Path) -> None:
    result = _start(tmp_path, ARENA_TASKS="celery")
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr.splitlines()[-1]


def test_deployment_checks_are_clean_under_production_settings(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    base.update(
        ARENA_DATA_DIR=str(tmp_path),
        ARENA_PRODUCTION="1",
        DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-looking-secret-for-the-check-" + "y" * 20,
        DJANGO_ALLOWED_HOSTS="arena.example.org",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_a_secret_key_refuses_to_start(tmp_path: Path) -> None:
    result = _start(tmp_path, ARENA_PRODUCTION="1")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("name", "value"),
    [("ARENA_RATE_LIMITS", "message=lots"), ("ARENA_MODERATION_BLOCKLIST", "/no/such/file")],
)
def test_bad_abuse_settings_name_their_variable(tmp_path: Path, name: str, value: str) -> None:
    result = _start(tmp_path, **{name: value})
    assert result.returncode != 0
    assert name in result.stderr.splitlines()[-1]
