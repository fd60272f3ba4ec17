"""A real browser (Debian's chromium, driven by playwright) uploads a book, asks, reads the answer and screenshots."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lcirc_plugins.app.handlers import AppContext

CHROMIUM = Path(os.environ.get("LCIRC_CHROMIUM", "/usr/bin/chromium"))  # Debian's chromium
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser]  # ~20 s: part of the default run; skips cleanly without chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need the playwright Python package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def app_url(app_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from lcirc_plugins.app.ui import launch

    ctx = AppContext.create(app_model, tmp_path_factory.mktemp("browser-app-data"))
    demo = launch(ctx, port=free_port(), concurrency=1, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def untrained_app_url(untrained_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from lcirc_plugins.app.ui import launch

    ctx = AppContext.create(untrained_model, tmp_path_factory.mktemp("untrained-app-data"), adapter="default")
    demo = launch(ctx, port=free_port(), concurrency=1, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def test_an_untrained_adapter_is_announced_before_any_question(browser, untrained_app_url: str) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(untrained_app_url, wait_until="load", timeout=60_000)
    status = page.locator("#model-status")
    expect(status).to_contain_text("untrained", timeout=30_000)
    expect(status).to_contain_text("do not use the book")
    expect(status).to_contain_text("keyword ranking")
    assert status.bounding_box()["y"] < page.locator("#question").bounding_box()["y"]  # above the question box
    page.close()


def settled_text(locator, timeout: float = 60.0) -> str:
    """The locator's text once it is non-empty and has stopped changing (the stream ended)."""
    deadline, last, stable_since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        text = locator.inner_text().strip() if locator.count() else ""
        if text != last:
            last, stable_since = text, time.monotonic()
        elif text and time.monotonic() - stable_since > 1.5:
            return text
        time.sleep(0.2)
    raise AssertionError(f"the text never settled; last seen: {last!r}")


def test_upload_ask_read_answer_and_screenshot(browser, app_url: str, small_book: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageStat
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(app_url, wait_until="load", timeout=60_000)
    page.locator("#upload").wait_for(timeout=60_000)
    # Before any question, the page says which model answers (this one's adapter has open gates: trained).
    expect(page.locator("#model-status")).to_contain_text("Backbone:", timeout=30_000)
    expect(page.locator("#model-status")).to_contain_text("(trained", timeout=5_000)
    assert "untrained" not in page.locator("#model-status").inner_text()
    page.locator("#upload input[type=file]").set_input_files(str(small_book))
    expect(page.locator("#upload")).to_contain_text("treasure", timeout=30_000)
    page.locator("#add").click()
    expect(page.locator("#status")).to_contain_text("compressed in", timeout=60_000)

    page.locator("#question textarea").fill("Who sat by the fire?")
    page.locator("#ask").click()
    expect(page.locator("#provenance-text")).to_contain_text("Passage 1", timeout=60_000)
    bot = page.locator("#chat [data-testid='bot']").last
    answer = settled_text(bot)
    assert answer and "Upload a book" not in answer

    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    image = Image.open(shot).convert("L")
    assert shot.stat().st_size > 20_000
    assert max(ImageStat.Stat(image).stddev) > 10, "the screenshot looks blank"
    assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    if os.environ.get("LCIRC_APP_SCREENSHOT"):  # keep it, e.g. as a CI artifact
        Path(os.environ["LCIRC_APP_SCREENSHOT"]).write_bytes(shot.read_bytes())
    page.close()
