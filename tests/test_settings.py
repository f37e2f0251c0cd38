"""Settings come from the environment; a bad value names its variable."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from arena import settings as arena_settings
from arena.env import env_retired

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "settings.md"
PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.ARENA_TASKS, settings.DATABASES['default']['ENGINE'])"
)
# Django's own settings keep their DJANGO_ prefix in the environment only.
DJANGO_NAMED = {"DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS",
                "DJANGO_CSRF_TRUSTED_ORIGINS", "DJANGO_STATIC_ROOT",
                "DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_HSTS_SECONDS"}  # fmt: skip


def _start(tmp_path: Path, probe: str = PROBE, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "ARENA_TASKS"}
    }
    base.update(ARENA_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="arena.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _variables_read() -> set[str]:
    """The names settings.py passes to an arena.env reader."""
    tree = ast.parse((ROOT / "arena" / "settings.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id.startswith("env_")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


def _table_names(heading: str) -> list[str]:
    """The backticked names in the first column of the table under `heading`."""
    section = DOCS.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.MULTILINE)


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


def test_the_database_variables_reach_the_connection_options(tmp_path: Path) -> None:
    probe = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    )
    result = _start(
        tmp_path,
        probe,
        DATABASE_URL="postgres://u@db:5432/arena",
        ARENA_DB_CONNECT_TIMEOUT_SECONDS="2",
        ARENA_DB_POOL_MAX_CONNECTIONS="7",
        ARENA_DB_POOL_TIMEOUT_SECONDS="3",
    )
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)
    assert options["connect_timeout"] == 2
    assert options["pool"] == {"min_size": 1, "max_size": 7, "timeout": 3}


def test_a_persistent_connection_and_the_pool_together_are_refused(tmp_path: Path) -> None:
    result = _start(
        tmp_path, DATABASE_URL="postgres://u@db:5432/arena", ARENA_DB_CONN_MAX_AGE_SECONDS="60"
    )
    assert result.returncode != 0
    assert "ARENA_DB_CONN_MAX_AGE_SECONDS must be 0 with ARENA_DB_POOL=1" in result.stderr


def test_renamed_variables_keep_their_defaults_under_the_new_names() -> None:
    # The values the old names had, now in the unit the new name says.
    assert django_settings.ARENA_VISITOR_SECONDS == 365 * 24 * 60 * 60
    assert django_settings.ARENA_GENERATION_TIMEOUT_SECONDS == 300.0
    assert django_settings.ARENA_REAP_INTERVAL_SECONDS == 3.0
    assert django_settings.ARENA_LEADERBOARD_EVERY_VOTES == 50
    assert django_settings.ARENA_MODERATION_TIMEOUT_SECONDS == 5.0
    assert django_settings.ARENA_DELTA_INTERVAL_MS == 40.0
    assert django_settings.ARENA_PUBLISH_GATHER_MS == 5.0
    assert django_settings.ARENA_SOCKET_GATHER_MS == 15.0
    assert django_settings.ARENA_REDIS_TIMEOUT_SECONDS == 2.0


def test_a_renamed_variable_is_read_under_its_new_name(tmp_path: Path) -> None:
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.ARENA_VISITOR_SECONDS, s.ARENA_GENERATION_TIMEOUT_SECONDS, "
        "s.ARENA_LEADERBOARD_EVERY_VOTES, s.ARENA_MODERATION_TIMEOUT_SECONDS)"
    )
    result = _start(
        tmp_path,
        probe,
        ARENA_VISITOR_SECONDS="86400",
        ARENA_GENERATION_TIMEOUT_SECONDS="9",
        ARENA_LEADERBOARD_EVERY_VOTES="7",
        ARENA_MODERATION_TIMEOUT_SECONDS="1.5",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["86400", "9.0", "7", "1.5"]


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
        ("ARENA_GENERATION_TIMEOUT_SECONDS", "fast"),
        ("ARENA_DB_POOL_MAX_CONNECTIONS", "0"),
        ("ARENA_VISITOR_SECONDS", "a year"),
    ],
)
def test_a_bad_value_stops_start_up_and_names_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    result = _start(tmp_path, **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]


def test_an_old_variable_name_stops_start_up_and_names_the_new_one(tmp_path: Path) -> None:
    result = _start(tmp_path, DB_POOL_MAX_SIZE="20")
    assert result.returncode != 0
    last = result.stderr.splitlines()[-1]
    assert "ImproperlyConfigured" in last
    assert "DB_POOL_MAX_SIZE was renamed: set ARENA_DB_POOL_MAX_CONNECTIONS instead" in last


def test_a_retired_tuning_variable_stops_start_up(tmp_path: Path) -> None:
    result = _start(tmp_path, ARENA_DELTA_INTERVAL_MS="40")
    assert result.returncode != 0
    assert "ARENA_DELTA_INTERVAL_MS is no longer read" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("old", sorted(arena_settings.RENAMED_VARIABLES))
def test_every_renamed_variable_is_refused_with_its_new_name(
    monkeypatch: pytest.MonkeyPatch, old: str
) -> None:
    monkeypatch.setenv(old, "1")
    new = arena_settings.RENAMED_VARIABLES[old]
    with pytest.raises(ImproperlyConfigured, match=f"^{old} was renamed: set {new} instead$"):
        env_retired(arena_settings.RENAMED_VARIABLES, arena_settings.FIXED_VARIABLES)


@pytest.mark.parametrize("old", sorted(arena_settings.FIXED_VARIABLES))
def test_every_retired_variable_is_refused(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    monkeypatch.setenv(old, "1")
    with pytest.raises(ImproperlyConfigured, match=f"^{old} is no longer read"):
        env_retired(arena_settings.RENAMED_VARIABLES, arena_settings.FIXED_VARIABLES)


def test_every_variable_read_is_documented_and_every_documented_one_is_read() -> None:
    documented = _table_names("Environment variables")
    assert len(documented) == len(set(documented)), "a variable is documented twice"
    assert set(documented) == _variables_read()


def test_every_fixed_setting_is_documented_and_not_read_from_the_environment() -> None:
    fixed = set(arena_settings.FIXED_VARIABLES.values())
    assert set(_table_names("Fixed settings")) == fixed
    assert not fixed & _variables_read()
    assert all(hasattr(django_settings, name) for name in fixed)


def test_a_renamed_variable_is_not_read_any_more_and_its_new_name_is() -> None:
    read = _variables_read()
    assert not set(arena_settings.RENAMED_VARIABLES) & read
    assert set(arena_settings.RENAMED_VARIABLES.values()) <= read


def test_each_variable_sets_the_setting_of_its_own_name() -> None:
    for name in _variables_read() - DJANGO_NAMED:
        assert hasattr(arena_settings, name), f"{name} is read but no setting has its name"
    for name in DJANGO_NAMED - {"DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_HSTS_SECONDS"}:
        assert hasattr(arena_settings, name.removeprefix("DJANGO_")), name


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
