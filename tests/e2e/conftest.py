"""Debian's chromium driven by Playwright, pointed at the real daphne server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Error, Page, ViewportSize, sync_playwright

# Playwright's own browser download is not used: the system chromium is.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    # Playwright's sync API marks an event loop as running on this thread, so
    # Django would refuse the tests' ORM calls though none of them is async.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            pytest.fail(f"chromium ({CHROMIUM}) did not start; `make chromium` installs it: {exc}")
        yield browser
        browser.close()


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught JavaScript errors of the page, filled by the `page` fixture."""
    return []


@pytest.fixture
def page(chromium: Browser, live_server_process: str, page_errors: list[str]) -> Iterator[Page]:
    """A fresh browser tab (own cookies, own sessionStorage) on the live server."""
    context = chromium.new_context(base_url=live_server_process, viewport=DESKTOP)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.on("pageerror", lambda exc: page_errors.append(str(exc)))
    yield tab
    context.close()
