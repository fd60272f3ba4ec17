"""The app's handlers called directly (no server): upload, library reuse, restart, bad files, questions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import SAMPLE_BOOK

from lcirc_plugins.app import handlers
from lcirc_plugins.app.handlers import NO_BOOK_MESSAGE, PLAIN_MODE, QD_MODE, AppContext
from lcirc_plugins.app.library import Library, sanitize_filename, text_sections
from lcirc_plugins.data.documents import chapter_at

BAD_MESSAGES = {
    "empty": "empty",
    "blank": "empty",
    "binary": "does not look like text",
    "corrupt-pdf": "pdf",
    "corrupt-epub": "epub",
    "unsupported": "unsupported file type",
}


def answer_of(ctx: AppContext, session: dict, question: str, keys: list[str], **kwargs) -> tuple[list[dict], str, object, int]:
    """Run the streaming handler to the end; returns the last history, markdown, figure and the number of updates."""
    updates = list(handlers.ask(ctx, session, question, keys, [], **kwargs))
    history, markdown, figure = updates[-1]
    return history, markdown, figure, len(updates)


def test_sample_book_upload_reuse_and_restart(make_lcirc, tmp_path: Path) -> None:
    model = make_lcirc("llama")
    ctx = AppContext.create(model, tmp_path / "data")
    seen: list[tuple[float, str]] = []
    result = handlers.add_books(ctx, None, [str(SAMPLE_BOOK)], progress=lambda f, d: seen.append((f, d)))
    assert [m.level for m in result.messages] == ["info"], result.status
    entry = result.added[0]
    assert "compressed in" in result.status and entry.num_tokens > 5000
    assert ctx.library.compress_calls == 1
    assert seen and seen[-1][0] == pytest.approx(1.0) and "tokens/s" in seen[-1][1] and "s left" in seen[-1][1]
    assert [k for _, k in handlers.book_choices(ctx, result.session)] == [entry.key]
    memory_file = ctx.library.memory_path(entry.key)
    stamp = memory_file.stat().st_mtime_ns
    # Everything is inside the data folder: the memory, the index and a sanitized copy of the upload.
    assert memory_file.parent == ctx.library.data_dir / "memories"
    assert (ctx.library.data_dir / "library.json").is_file()
    assert [p.name.split("-", 1)[1] for p in (ctx.library.upload_dir).iterdir()] == ["sample-book.txt"]

    # Same book again (another session, another file name): loaded from the library, not recompressed.
    copy = tmp_path / "Same Book (copy).txt"
    copy.write_bytes(SAMPLE_BOOK.read_bytes())
    again = handlers.add_books(ctx, None, [str(copy)])
    assert again.added[0].key == entry.key and "loaded from the library" in again.status
    assert ctx.library.compress_calls == 1 and memory_file.stat().st_mtime_ns == stamp

    # A restart: a new Library on the same folder knows the book and loads its memory without compressing.
    restarted = AppContext.create(model, tmp_path / "data")
    assert [e.key for e in restarted.library.books()] == [entry.key]
    third = handlers.add_books(restarted, None, [str(SAMPLE_BOOK)])
    assert "loaded from the library" in third.status and restarted.library.compress_calls == 0
    assert restarted.library.memory(entry.key).num_tokens == entry.num_tokens
    assert memory_file.stat().st_mtime_ns == stamp

    # Another adapter (other weights) must not reuse that memory: it compresses the book anew.
    other = AppContext.create(make_lcirc("llama", seed=1), tmp_path / "data")
    assert other.library.books() == []
    fresh = handlers.add_books(other, None, [str(SAMPLE_BOOK)])
    assert fresh.added[0].key != entry.key and other.library.compress_calls == 1


def test_bad_files_each_get_their_message_and_good_ones_still_work(
    make_lcirc, tmp_path: Path, bad_files: dict[str, Path], small_book: Path
) -> None:
    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data")
    result = handlers.add_books(ctx, None, [str(bad_files[k]) for k in BAD_MESSAGES] + [str(small_book)])
    assert len(result.messages) == len(BAD_MESSAGES) + 1
    for (kind, expected), message in zip(BAD_MESSAGES.items(), result.messages):
        assert message.level == "warning", (kind, message.text)
        assert expected in message.text.lower(), (kind, message.text)
        assert str(tmp_path) not in message.text  # no server paths leak into the UI
    assert result.messages[-1].level == "info" and len(result.added) == 1
    # Rejected files are not kept; the good one is.
    assert [p.name for p in ctx.library.upload_dir.iterdir()] == [
        f"{p.name}" for p in ctx.library.upload_dir.iterdir() if p.name.endswith("treasure_island.txt")
    ]
    assert handlers.add_books(ctx, None, []).messages[0].level == "warning"


def test_oversized_upload_is_refused_before_reading(make_lcirc, tmp_path: Path, small_book: Path) -> None:
    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data", max_upload_bytes=1000)
    result = handlers.add_books(ctx, None, [str(small_book)])
    assert result.messages[0].level == "warning" and "upload limit" in result.messages[0].text
    assert ctx.library.compress_calls == 0 and list(ctx.library.upload_dir.iterdir()) == []


def test_question_before_any_book_and_empty_question(make_lcirc, tmp_path: Path) -> None:
    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data")
    history, markdown, figure, _ = answer_of(ctx, handlers.new_session(), "Who is Billy Bones?", [])
    assert history[-1]["role"] == "assistant" and NO_BOOK_MESSAGE in history[-1]["content"] and figure is None
    history, markdown, _, _ = answer_of(ctx, handlers.new_session(), "   ", [])
    assert history == [] and "question" in markdown.lower()


def bm25_sources(ctx: AppContext, keys: list[str], question: str):
    """The app's sources for an answer with closed gates (an untrained adapter): BM25 for the question."""
    prepared = ctx.model.prepare_answer(question, [ctx.library.memory(key) for key in keys], max_new_tokens=8)
    return handlers.answer_sources(ctx, keys, prepared, "")


def test_answer_streams_with_provenance_in_both_modes(make_lcirc, tmp_path: Path, small_book: Path) -> None:
    ctx = AppContext.create(make_lcirc("llama", query_dependent=True, gate_init=0.5), tmp_path / "data")
    session = handlers.add_books(ctx, None, [str(small_book)]).session
    key = session["books"][0]
    for mode in (QD_MODE, PLAIN_MODE):
        history, markdown, figure, updates = answer_of(
            ctx, session, "Who sat by the fire in the Admiral Benbow?", [key], max_new_tokens=12, mode=mode
        )
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[-1]["content"].strip() and updates >= 3  # the answer arrived in pieces
        assert "Passage 1" in markdown and "characters" in markdown and "% into the book" in markdown
        assert figure is not None and figure.axes[0].get_lines()
    history, _, _, _ = answer_of(ctx, session, "Who?", [key], max_new_tokens=512)  # more than the 256-token window
    assert "window" in history[-1]["content"] and history[-1]["content"].startswith("⚠️")
    closed = AppContext.create(make_lcirc("llama"), tmp_path / "closed")
    key = handlers.add_books(closed, None, [str(small_book)]).session["books"][0]
    found, _, _ = bm25_sources(closed, [key], "Who ate Zanzibar marmalade?")
    assert found[0]["chapter"].endswith("CHAPTER II") and found[0]["score"] > 0
    assert bm25_sources(closed, [key], "xylophone quasar?")[0] == []
    assert "No passage" in bm25_sources(closed, [key], "xylophone quasar?")[1]
    text = small_book.read_text(encoding="utf-8")
    assert "Zanzibar" in text[found[0]["start"] : found[0]["end"]]


def test_sessions_are_kept_apart(make_lcirc, tmp_path: Path, small_book: Path) -> None:
    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data", share_library=False)
    alice = handlers.add_books(ctx, None, [str(small_book)]).session
    bob = handlers.new_session()
    key = alice["books"][0]
    assert handlers.book_choices(ctx, bob) == []
    history, _, _, _ = answer_of(ctx, bob, "What is in the book?", [key], max_new_tokens=4)
    assert NO_BOOK_MESSAGE in history[-1]["content"]  # bob cannot read alice's book by guessing its key


def test_helpers() -> None:
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("..\\..\\evil name?.txt") == "evil_name_.txt"
    assert sanitize_filename("Ünïcödé böök.md") == "Unicode_book.md"
    assert sanitize_filename("...") == "upload"
    sections = text_sections("Intro\nCHAPTER I\nThe Old Sea-dog\n\nCHAPTER II\nBlack Dog\n## Notes\n")
    assert [t for t, _ in sections] == ["CHAPTER I", "CHAPTER II", "Notes"]
    gutenberg = text_sections(SAMPLE_BOOK.read_text(encoding="utf-8-sig"))
    assert ("1. The Old Sea-dog at the Admiral Benbow", 4143) in gutenberg and (
        "2. Black Dog Appears and Disappears",
        15736,
    ) in gutenberg
    assert chapter_at(sections, 0) is None and chapter_at(sections, sections[1][1] + 3) == "CHAPTER II"


def test_broken_index_does_not_stop_the_app(make_lcirc, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "library.json").write_text("{not json")
    library = Library(folder, make_lcirc("llama"))
    assert library.books() == [] and any(p.name.startswith("library.json.broken") for p in folder.iterdir())
    assert not os.path.exists(folder / "library.json")


def test_stop_ends_generation_in_the_worker(make_lcirc, tmp_path: Path, small_book: Path) -> None:
    """Closing the stream (what the Stop button does) makes generate() in the worker thread return early."""
    import threading
    import time

    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data")
    session = handlers.add_books(ctx, None, [str(small_book)]).session
    question, keys = "Who sat by the fire?", session["books"]
    started = time.monotonic()
    full = list(handlers.ask(ctx, session, question, keys, [], max_new_tokens=180))[-1][0][-1]["content"]
    full_seconds = time.monotonic() - started
    before = threading.active_count()
    started = time.monotonic()
    stream = handlers.ask(ctx, session, question, keys, [], max_new_tokens=180)
    for _ in range(3):
        history, _, _ = next(stream)
    stream.close()
    while threading.active_count() > before and time.monotonic() - started < 30:
        time.sleep(0.01)
    assert threading.active_count() == before, "the generation thread kept running after stop"
    assert time.monotonic() - started < full_seconds / 2, "stop did not shorten the generation"
    assert len(history[-1]["content"]) < len(full)


def test_pdf_and_epub_uploads_keep_their_chapters(make_lcirc, tmp_path: Path) -> None:
    from document_files import make_epub, make_pdf

    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data")
    pdf = tmp_path / "Log Book.pdf"
    pdf.write_bytes(make_pdf([["The captain kept a log of the voyage."], ["The parrot said pieces of eight."]]))
    epub = make_epub(
        tmp_path / "tale.epub",
        [
            ("one.xhtml", "One", "One", "<h1>The Old Sea-dog</h1><p>Squire Trelawney asked me to write.</p>"),
            ("two.xhtml", "Two", "Two", "<h1>Black Dog</h1><p>The stranger ate Zanzibar marmalade.</p>"),
        ],
    )
    result = handlers.add_books(ctx, None, [str(pdf), str(epub)])
    assert [m.level for m in result.messages] == ["info", "info"], result.status
    assert result.added[1].title == "A Test Book"
    found, markdown, _ = bm25_sources(ctx, [result.added[1].key], "Who ate Zanzibar marmalade?")
    assert found[0]["chapter"] and found[0]["chapter"].endswith("Black Dog") and "Black Dog" in markdown
    found, _, _ = bm25_sources(ctx, [result.added[0].key], "What did the parrot say?")
    assert "parrot" in found[0]["text"]


def test_provenance_comes_from_attention_when_the_gates_are_open(make_lcirc, tmp_path: Path, small_book: Path) -> None:
    text = small_book.read_text(encoding="utf-8")
    for gate, note in ((0.5, handlers.PROVENANCE_NOTE), (0.0, handlers.BM25_NOTE)):
        ctx = AppContext.create(make_lcirc("llama", gate_init=gate), tmp_path / f"data-{gate}")
        key = handlers.add_books(ctx, None, [str(small_book)]).session["books"][0]
        session = {"books": [key]}
        updates = list(handlers.ask(ctx, session, "Who ate Zanzibar marmalade?", [key], [], max_new_tokens=8))
        assert updates[0][1] == handlers.WAITING_NOTE, "provenance waits for the complete answer"
        _, markdown, figure = updates[-1]
        assert note in markdown and "Passage 1" in markdown, (gate, markdown)
        assert figure.axes[0].get_ylabel() == ("attention share" if gate else "BM25 score")
    open_ctx = AppContext.create(make_lcirc("llama", gate_init=0.5), tmp_path / "data-open")
    open_key = handlers.add_books(open_ctx, None, [str(small_book)]).session["books"][0]
    open_memory = open_ctx.library.memory(open_key)
    found, _, _ = handlers.answer_sources(open_ctx, [open_key], open_ctx.model.prepare_answer("Who?", open_memory), "Jim")
    assert 1 <= len(found) <= open_ctx.top_k and sum(r["score"] for r in found) <= 1 + 1e-6
    assert all(text[r["start"] : r["end"]] == r["text"] for r in found), "quotes sit at their character spans"


def test_follow_up_questions_see_the_earlier_turns(make_lcirc, tmp_path: Path, small_book: Path) -> None:
    ctx = AppContext.create(make_lcirc("llama"), tmp_path / "data")
    key = handlers.add_books(ctx, None, [str(small_book)]).session["books"][0]
    earlier = [
        {"role": "user", "content": "Who is the captain?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Captain Smollett."}]},  # Gradio's message parts
        {"role": "user", "content": "And the cook?"},
        {"role": "assistant", "content": "⚠️ the question is empty"},  # failed turns are not replayed
    ]
    prompts = []
    real = ctx.model.prompt_ids
    ctx.model.prompt_ids = lambda *a, **k: prompts.append(k["history"]) or real(*a, **k)
    history = list(handlers.ask(ctx, {"books": [key]}, "What is his first name?", [key], earlier, max_new_tokens=4))[-1][0]
    assert prompts == [[{"role": "user", "content": "Who is the captain?"}, {"role": "assistant", "content": "Captain Smollett."}]]
    assert len(history) == 6 and history[-2]["content"] == "What is his first name?"
    ids = real("What is his first name?", 4, history=prompts[0])[0].tolist()
    assert "Captain Smollett." in ctx.model.tokenizer.decode(ids)


def test_old_turns_are_dropped_to_fit_the_window(make_lcirc) -> None:
    model = make_lcirc("llama")  # window 256
    turns = [{"role": "user", "content": f"Question {i} " + "word " * 30} for i in range(8)]
    turns = [t for q in turns for t in (q, {"role": "assistant", "content": "An answer."})]
    ids = model.prompt_ids("And now?", 16, history=turns)[0].tolist()
    text = model.tokenizer.decode(ids)
    assert len(ids) + 16 <= 256 and "Question 7" in text and "Question 0" not in text
