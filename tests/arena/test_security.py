"""Model output cannot phone home, and staff surfaces hold (issue 14, items 6
and 9): the Content-Security-Policy on every page, pages without inline
script, the servers' websocket frame limit, X-Forwarded-Proto only from
trusted proxies, API keys only from ARENA_KEY_ variables, throttled admin
sign-in, and local contenders named after the model the engine serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Origin

from arena.events import MAX_FRAME_CHARS
from arena.middleware import CONTENT_SECURITY_POLICY
from arena.ratelimit import counter
from inference.engines.base import EngineError
from inference.engines.local import DEFAULT_MODEL
from inference.health import endpoint_check
from inference.models import Contender, Endpoint, Engine
from inference.selectors import endpoint_config
from tests.conftest import ROOT, Process, child_env, free_port

# --- the Content-Security-Policy ---------------------------------------------------


def test_the_policy_allows_nothing_from_other_hosts_and_no_inline_script() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["img-src"] == "'self' data:"
    assert directives["connect-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert settings.MIDDLEWARE[0] == "arena.middleware.ContentSecurityPolicyMiddleware"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/", "/side-by-side/", "/leaderboard/", "/healthz", "/admin/login/", "/no/such/page/"]
)
def test_every_response_carries_the_policy(url: str) -> None:
    response = Client().get(url)
    assert response.status_code in (200, 404)
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


class _InlineCode(HTMLParser):
    """What a policy without 'unsafe-inline' would block: inline scripts,
    on* handlers, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").strip().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}={value}>")
        data_island = (names.get("type") or "") == "application/json"
        self._in_script = tag == "script" and not names.get("src") and not data_island

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append(f"<script>{data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def _inline_code(html: str) -> list[str]:
    parser = _InlineCode()
    parser.feed(html)
    return parser.found


def test_no_template_of_the_project_has_inline_script() -> None:
    templates = [*ROOT.glob("templates/**/*.html"), *ROOT.glob("*/templates/**/*.html")]
    assert len(templates) >= 5
    for path in templates:
        assert _inline_code(path.read_text()) == [], path


@pytest.fixture
def root_admin(db: None) -> Client:
    user = User.objects.create_superuser("root", password="root-pw")
    client = Client()
    client.force_login(user)
    return client


def test_the_pages_and_every_admin_page_in_use_run_under_the_policy(
    root_admin: Client, alpha: Contender
) -> None:
    Endpoint.objects.create(name="hosted", base_url="http://127.0.0.1:9/v1")
    urls = ["/", "/side-by-side/", "/leaderboard/", "/admin/"]
    for model in admin.site._registry:
        meta = model._meta
        urls += [f"/admin/{meta.app_label}/{meta.model_name}/"]
        urls += [f"/admin/{meta.app_label}/{meta.model_name}/add/"]
    urls += [f"/admin/inference/contender/{alpha.pk}/change/"]
    for url in urls:
        response = root_admin.get(url)
        if response.status_code == 403:  # a model the admin lists but never adds
            continue
        assert response.status_code == 200, url
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert _inline_code(response.content.decode()) == [], url


# --- the websocket frame limit of the real servers ---------------------------------


def _number_after(flag: str, text: str) -> int:
    match = re.search(rf'{re.escape(flag)}"?,?\s*"?(\$\(WS_MAX_BYTES\)|\d+)', text)
    assert match, flag
    if match[1] == "$(WS_MAX_BYTES)":
        make_var = re.search(r"^WS_MAX_BYTES := (\d+)$", text, re.MULTILINE)
        assert make_var
        return int(make_var[1])
    return int(match[1])


def test_every_server_the_project_starts_refuses_frames_over_the_apps_cap() -> None:
    from bench.load import DAPHNE_WS_ARGS, UVICORN_ARGS
    from tests.conftest import DAPHNE_WS_LIMITS

    makefile = (ROOT / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "--websocket-max-message-size $(WS_MAX_BYTES)" in run
    assert "--websocket-max-frame-size $(WS_MAX_BYTES)" in run
    assert _number_after("--websocket-max-frame-size", makefile) == MAX_FRAME_CHARS
    for name in ("docker/Dockerfile", "docker/compose.yml"):
        assert _number_after("--ws-max-size", (ROOT / name).read_text()) == MAX_FRAME_CHARS, name
    for argv in (DAPHNE_WS_LIMITS, DAPHNE_WS_ARGS):
        assert argv == [
            "--websocket-max-message-size",
            str(MAX_FRAME_CHARS),
            "--websocket-max-frame-size",
            str(MAX_FRAME_CHARS),
        ]
    assert UVICORN_ARGS[UVICORN_ARGS.index("--ws-max-size") + 1] == str(MAX_FRAME_CHARS)


OPEN = -1  # the socket was still open after the 1 MB frame


def _frames_against(url: str) -> tuple[dict[str, Any], int | None, list[str]]:
    """A 60 KB frame, then a 1 MB one: the app's answer to the first, the
    close code after the second, and whatever else arrived."""
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        page = http.get("/")
        page.raise_for_status()
        cookie = "; ".join(f"{k}={v}" for k, v in page.cookies.items())
    ws_url = "ws://" + url.removeprefix("http://") + "/ws/battle/"
    with connect(
        ws_url,
        additional_headers={"Cookie": cookie},
        origin=Origin(url),
        proxy=None,
        open_timeout=30,
        max_size=2**22,
    ) as ws:
        ws.send(json.dumps({"type": "no.such.type", "pad": "x" * 60_000}))
        answer = json.loads(ws.recv(timeout=30))
        after: list[str] = []
        code: int | None = OPEN
        try:
            ws.send(json.dumps({"type": "no.such.type", "pad": "x" * (1 << 20)}))
            while True:
                after.append(str(ws.recv(timeout=10)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            pass  # still open: the frame reached the app
        return answer, code, after


@pytest.mark.django_db(transaction=True)
def test_daphne_as_started_here_refuses_a_1mb_frame_before_the_app_sees_it(
    live_server_process: str,
) -> None:
    answer, code, after = _frames_against(live_server_process)
    assert answer["type"] == "error"
    assert answer["code"] == "unknown_type"  # the 60 KB frame reached the app
    # Autobahn (daphne) fails a frame over maxFramePayloadSize by dropping the
    # TCP connection (failByDrop): no close frame, so no close code. The app
    # cannot do that; it would have answered `too_large` and kept the socket.
    assert code is None
    assert after == []


@pytest.fixture
def uvicorn_as_docker_runs_it(django_db_setup: None) -> Iterator[str]:
    """uvicorn with the Dockerfile's own CMD, on a free local port."""
    text = (ROOT / "docker/Dockerfile").read_text().replace("\\\n", " ")
    argv: list[str] = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)[1])  # type: ignore[index]
    assert argv[0] == "uvicorn"
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    server = Process("uvicorn-docker-cmd", [sys.executable, "-m", *argv], child_env())
    server.wait_for_log("Uvicorn running on", timeout=120)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_uvicorn_as_docker_runs_it_refuses_a_1mb_frame_before_the_app_sees_it(
    uvicorn_as_docker_runs_it: str,
) -> None:
    answer, code, after = _frames_against(uvicorn_as_docker_runs_it)
    assert answer["code"] == "unknown_type"
    assert code == 1009
    assert after == []


# --- X-Forwarded-Proto -------------------------------------------------------------

PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(getattr(settings, 'SECURE_PROXY_SSL_HEADER', None))"
)


def _settings_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "ARENA_TASKS"}
    }
    base.update(ARENA_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="arena.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=base, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_production_believes_x_forwarded_proto_only_with_trusted_proxies(tmp_path: Path) -> None:
    production = {"ARENA_PRODUCTION": "1", "DJANGO_SECRET_KEY": "k" * 60}
    alone = _settings_probe(tmp_path, **production)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == "None"
    proxied = _settings_probe(tmp_path, **production, ARENA_TRUSTED_PROXIES="10.0.0.0/8")
    assert proxied.returncode == 0, proxied.stderr
    assert proxied.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_a_trusted_proxy_that_is_not_an_address_stops_start_up(tmp_path: Path) -> None:
    result = _settings_probe(tmp_path, ARENA_TRUSTED_PROXIES="10.0.0.0/8,proxy.internal")
    assert result.returncode != 0
    assert "ARENA_TRUSTED_PROXIES" in result.stderr.splitlines()[-1]


@pytest.mark.django_db
def test_x_forwarded_proto_is_believed_from_a_trusted_proxy_only(settings: Any) -> None:
    settings.ARENA_TRUSTED_PROXIES = ["10.0.0.1"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    spoofed = Client(REMOTE_ADDR="203.0.113.9").get("/healthz", HTTP_X_FORWARDED_PROTO="https")
    assert spoofed.status_code == 301  # plain HTTP, whatever the header says
    assert spoofed.headers["Location"].startswith("https://")
    proxied = Client(REMOTE_ADDR="10.0.0.1").get("/healthz", HTTP_X_FORWARDED_PROTO="https")
    assert proxied.status_code == 200


# --- API keys only from ARENA_KEY_ variables ---------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("variable", "said"),
    [
        ("DJANGO_SECRET_KEY", "secret of the arena"),
        ("DATABASE_URL", "secret of the arena"),
        ("REDIS_URL", "secret of the arena"),
        ("ARENA_KEY_BACKUP_URL", "secret of the arena"),
        ("VLLM_API_KEY", "start with ARENA_KEY_"),
        ("HOME", "start with ARENA_KEY_"),
    ],
)
def test_endpoint_add_refuses_a_key_variable_outside_the_prefix(variable: str, said: str) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("endpoint_add", "vllm", "http://127.0.0.1:9/v1", "--api-key-env", variable)
    assert "api_key_env" in str(refused.value)
    assert variable in str(refused.value)
    assert said in str(refused.value)
    assert not Endpoint.objects.exists()


@pytest.mark.django_db
def test_endpoint_add_takes_a_key_variable_under_the_prefix() -> None:
    call_command("endpoint_add", "vllm", "http://127.0.0.1:9/v1", "--api-key-env", "ARENA_KEY_VLLM")
    assert Endpoint.objects.get().api_key_env == "ARENA_KEY_VLLM"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP server that records every request's headers: the 'endpoint'."""
    seen: list[dict[str, str]] = []

    class Handler(_Recorder):
        pass

    Handler.seen = seen
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_an_old_endpoint_row_naming_the_secret_key_is_refused_at_use_and_sends_nothing(
    recorder: tuple[str, list[dict[str, str]]], root_admin: Client
) -> None:
    url, seen = recorder
    # Saved before the rule (create() runs no validators), as an old row would be.
    endpoint = Endpoint.objects.create(name="old", base_url=url, api_key_env="DJANGO_SECRET_KEY")
    with pytest.raises(EngineError) as refused:
        endpoint_config(endpoint).headers()
    assert refused.value.code == "engine_auth"
    assert "DJANGO_SECRET_KEY" in refused.value.message
    assert "ARENA_KEY_" in refused.value.message
    assert settings.SECRET_KEY not in refused.value.message
    report = endpoint_check(endpoint=endpoint)
    assert not report.healthy
    assert "refused" in report.message
    assert all(settings.SECRET_KEY not in json.dumps(h) for h in seen)
    assert not [h for h in seen if "Authorization" in h or "authorization" in h]
    listing = root_admin.get("/admin/inference/endpoint/").content.decode()
    assert "$DJANGO_SECRET_KEY (REFUSED: not under ARENA_KEY_)" in listing


def test_a_moderation_key_variable_outside_the_prefix_stops_start_up(tmp_path: Path) -> None:
    result = _settings_probe(tmp_path, ARENA_MODERATION_KEY_ENV="DJANGO_SECRET_KEY")
    assert result.returncode != 0
    last = result.stderr.splitlines()[-1]
    assert "ARENA_MODERATION_KEY_ENV" in last
    assert "DJANGO_SECRET_KEY" in last
    allowed = _settings_probe(tmp_path, ARENA_MODERATION_KEY_ENV="ARENA_KEY_MODERATION")
    assert allowed.returncode == 0, allowed.stderr


# --- admin sign-in throttle ---------------------------------------------------------


@pytest.fixture
def no_login_counts() -> Iterator[None]:
    """Failed sign-ins live in Redis for the window: none from earlier runs."""

    def clear() -> None:
        if not settings.REDIS_URL:
            return
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            keys = list(client.scan_iter("arena:rate:login:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    clear()
    yield
    clear()


def _sign_in(client: Client, username: str, password: str) -> tuple[int, str]:
    assert client.get("/admin/login/").status_code == 200
    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    return response.status_code, response.content.decode()


@pytest.fixture
def carol(db: None, no_login_counts: None) -> User:
    """Carol is staff; Mallory guesses her password."""
    return User.objects.create_user("carol", password="carol-pw", is_staff=True)


def test_admin_sign_in_is_refused_after_ten_failures_even_with_the_right_password(
    carol: User,
) -> None:
    mallory = Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.7")
    for guess in range(settings.ARENA_ADMIN_LOGIN_FAILURES):
        status, page = _sign_in(mallory, "carol", f"guess-{guess}")
        assert status == 200
        assert "Please enter the correct username and password" in page
    status, page = _sign_in(mallory, "carol", "carol-pw")
    assert status == 200  # the form again, not the redirect into the admin
    assert "Too many failed sign-ins" in page
    assert "_auth_user_id" not in mallory.session
    # Per username: carol's account from another address is held too.
    status, page = _sign_in(
        Client(enforce_csrf_checks=True, REMOTE_ADDR="192.0.2.40"), "carol", "carol-pw"
    )
    assert "Too many failed sign-ins" in page


def test_admin_sign_in_is_refused_per_address_whatever_the_username(carol: User) -> None:
    User.objects.create_user("dave", password="dave-pw", is_staff=True)
    mallory = Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.8")
    for guess in range(settings.ARENA_ADMIN_LOGIN_FAILURES):
        _sign_in(mallory, f"user{guess}", "nope")
    status, page = _sign_in(mallory, "dave", "dave-pw")
    assert "Too many failed sign-ins" in page
    # Carol, elsewhere and never guessed at, signs in as usual.
    status, _ = _sign_in(
        Client(enforce_csrf_checks=True, REMOTE_ADDR="192.0.2.41"), "carol", "carol-pw"
    )
    assert status == 302


def test_successful_sign_ins_do_not_count_against_the_limit(carol: User) -> None:
    for _ in range(settings.ARENA_ADMIN_LOGIN_FAILURES + 2):
        client = Client(enforce_csrf_checks=True, REMOTE_ADDR="192.0.2.42")
        status, _ = _sign_in(client, "carol", "carol-pw")
        assert status == 302


@pytest.mark.skipif(not settings.REDIS_URL, reason="shared counts need Redis")
def test_failed_sign_ins_are_counted_in_redis_for_every_web_process(carol: User) -> None:
    mallory = Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.9")
    for guess in range(settings.ARENA_ADMIN_LOGIN_FAILURES):
        _sign_in(mallory, "carol", f"guess-{guess}")
    counter.cache_clear()  # as another process would start: nothing in memory
    assert "Too many failed sign-ins" in _sign_in(mallory, "carol", "carol-pw")[1]


# --- local contenders name the model the local engine serves -----------------------


@pytest.mark.django_db
def test_contender_add_refuses_a_local_contender_named_after_another_model() -> None:
    with pytest.raises(CommandError) as refused:
        call_command("contender_add", "big", "--engine", "local", "--model", "llama-3.1-70b")
    assert f"serves {DEFAULT_MODEL} only" in str(refused.value)
    assert "llama-3.1-70b" in str(refused.value)
    assert not Contender.objects.exists()


@pytest.mark.django_db
def test_a_local_contender_may_leave_the_model_empty_or_name_what_is_served() -> None:
    for name, model in (("plain", ""), ("named", DEFAULT_MODEL)):
        contender = Contender(name=name, engine=Engine.LOCAL, model=model)
        contender.full_clean()
        contender.save()
    assert sorted(Contender.objects.values_list("name", flat=True)) == ["named", "plain"]
