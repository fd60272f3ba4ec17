"""The app on a real local port, driven by ``gradio_client`` (one Client = one browser session)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file
from support import SHARED_DATA

from lcirc_plugins.app.handlers import NO_BOOK_MESSAGE, QD_MODE, AppContext
from lcirc_plugins.app.ui import launch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AppContext]]:
    data_dir = tmp_path_factory.mktemp("app-data")
    ctx = AppContext.create(app_model, data_dir, max_upload_bytes=200_000)
    demo = launch(ctx, port=free_port(), max_upload_mb=0.2, concurrency=1, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url, ctx
    finally:
        demo.close()


def client_for(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def text_of(message: dict) -> str:
    """Gradio 6 sends message content as a list of parts ({"type": "text", "text": ...})."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def add(client: Client, path: Path | list[Path]) -> tuple[str, list[str]]:
    """Upload files; returns the status markdown and the books the picker now selects."""
    paths = path if isinstance(path, list) else [path]
    status, picker, _ = client.predict([handle_file(str(p)) for p in paths], [], api_name="/add_books")
    return status, picker["value"] if isinstance(picker, dict) else picker


def ask(client: Client, question: str, keys: list[str], max_new_tokens: int = 12) -> list[tuple]:
    job = client.submit(question, keys, [], max_new_tokens, 0.0, QD_MODE, api_name="/ask")
    job.result(timeout=120)
    return job.outputs()


def test_upload_ask_streamed_answer_with_provenance(server, small_book: Path) -> None:
    url, ctx = server
    client = client_for(url)
    status, picked = add(client, small_book)
    assert "tokens" in status and "compressed in" in status, status
    assert picked == [ctx.library.books()[0].key]
    updates = ask(client, "Who sat by the fire?", picked)
    history, markdown, plot, cleared = updates[-1]
    assert [m["role"] for m in history] == ["user", "assistant"] and text_of(history[-1]).strip()
    answers = [text_of(u[0][-1]) for u in updates if len(u[0]) == 2]
    assert len(set(answers)) >= 3, "the answer should arrive in several pieces"
    assert "Passage 1" in markdown and "characters" in markdown and plot is not None and cleared == ""
    # The uploaded file landed inside the app's data folder (Gradio's upload dir is moved there too).
    assert os.environ["GRADIO_TEMP_DIR"].startswith(str(ctx.library.data_dir))
    assert any(p.name.endswith("treasure_island.txt") for p in ctx.library.upload_dir.iterdir())

    # A second session uploading the same book gets it from the library without recompressing.
    calls = ctx.library.compress_calls
    status, _ = add(client_for(url), small_book)
    assert "loaded from the library" in status and ctx.library.compress_calls == calls


def test_bad_uploads_then_good_request_still_works(server, bad_files: dict[str, Path], small_book: Path, tmp_path: Path) -> None:
    url, _ctx = server
    client = client_for(url)
    # Gradio itself refuses other extensions (gr.File file_types) and files over max_file_size, with a message.
    with pytest.raises(Exception, match="Invalid file type"):
        add(client, bad_files["unsupported"])
    for kind in ("empty", "binary", "corrupt-pdf", "corrupt-epub"):
        status, picked = add(client, bad_files[kind])
        assert "Not added" in status and bad_files[kind].name in status, (kind, status)
        assert picked == []
    big = tmp_path / "big.txt"
    big.write_text("All work and no play makes Jack a dull boy.\n" * 6000)  # ~260 KB > the 0.2 MB cap
    with pytest.raises(Exception, match="(?i)size|large|limit"):
        add(client, big)
    history, markdown, _, _ = ask(client, "Who sat by the fire?", [])[-1]
    assert NO_BOOK_MESSAGE in text_of(history[-1])
    status, picked = add(client, small_book)
    history, markdown, _, _ = ask(client, "Who sat by the fire?", picked)[-1]
    assert text_of(history[-1]).strip() and "Passage 1" in markdown


def test_several_files_and_two_sessions_at_once(server, bad_files: dict[str, Path], small_book: Path) -> None:
    url, _ctx = server
    alice, bob = client_for(url), client_for(url)
    status, picked = add(alice, [bad_files["binary"], small_book])
    assert "Not added" in status and "Added: " in status and len(picked) == 1, status
    # Both sessions ask at once: the queue runs them one after the other (concurrency 1), both complete.
    jobs = [c.submit("Who sat by the fire?", picked, [], 12, 0.0, QD_MODE, api_name="/ask") for c in (alice, bob)]
    for job in jobs:
        history, markdown, _, _ = job.result(timeout=120)
        assert [m["role"] for m in history] == ["user", "assistant"] and text_of(history[-1]).strip()
        assert "Passage 1" in markdown


# Malformed /ask calls (question, books, history, max_new_tokens, temperature, mode) and the field each must name.
MALFORMED_ASKS = {
    "a dict where a book key goes": ("Who?", [{"key": "x"}], [], 12, 0.0, QD_MODE, "books"),
    "a list as the question": (["Who?"], [], [], 12, 0.0, QD_MODE, "question"),
    "a string as the history": ("Who?", [], "earlier turns", 12, 0.0, QD_MODE, "history"),
    "no token budget": ("Who?", [], [], 0, 0.0, QD_MODE, "max_new_tokens"),
    "a huge token budget": ("Who?", [], [], 10**9, 0.0, QD_MODE, "max_new_tokens"),
    "text as the temperature": ("Who?", [], [], 12, "hot", QD_MODE, "temperature"),
    "an unknown mode": ("Who?", [], [], 12, 0.0, "GPT", "mode"),
}


@pytest.mark.parametrize("case", list(MALFORMED_ASKS))
def test_malformed_api_calls_get_a_clear_error_and_the_server_goes_on(server, small_book: Path, case: str) -> None:
    url, _ctx = server
    client = client_for(url)
    *args, field = MALFORMED_ASKS[case]
    with pytest.raises(Exception, match=rf"{field} must be") as raised:
        client.predict(*args, api_name="/ask")
    assert "upstream" not in str(raised.value)
    with pytest.raises(Exception, match="files must be a list of uploaded files"):
        client.predict({"title": "not a file"}, [], api_name="/add_books")
    _, picked = add(client, small_book)
    history, markdown, _, _ = ask(client, "Who sat by the fire?", picked)[-1]
    assert text_of(history[-1]).strip() and "Passage 1" in markdown


SHARED_BOOK = SHARED_DATA / "books" / "stevenson-treasure-island.txt"


@pytest.mark.slow
def test_full_shared_book_through_the_client(app_model, tmp_path: Path) -> None:
    """A whole book from $LCIRC_SHARED_DATA/books (~100k tokens) uploaded, compressed and asked about."""
    if not SHARED_BOOK.is_file():
        pytest.skip(f"{SHARED_BOOK} is not available")
    ctx = AppContext.create(app_model, tmp_path / "data")
    demo = launch(ctx, port=free_port(), concurrency=1, prevent_thread_lock=True, quiet=True)
    try:
        client = client_for(demo.local_url)
        job = client.submit([handle_file(str(SHARED_BOOK))], [], api_name="/add_books")
        descriptions = set()
        while not job.done():
            for unit in job.status().progress_data or []:
                descriptions.add(unit.desc)
            time.sleep(0.1)
        status, picker, _ = job.result()
        picked = picker["value"]
        # The progress bar reported segments, tokens, tokens/s and time left while compressing.
        assert any(d and "segment" in d and "tokens/s" in d and "s left" in d for d in descriptions), descriptions
        assert "compressed in" in status and len(picked) == 1, status
        history, markdown, _plot, _ = ask(client, "Who is Long John Silver?", picked)[-1]
        # The tiny model's weights are random: its passages are real quotes of the book, not the right ones.
        assert text_of(history[-1]).strip() and "Passage 1" in markdown and "% into the book" in markdown
    finally:
        demo.close()
