"""The Gradio 6 interface: upload books, watch them compress, chat about them, see the passages behind an answer.

Only layout and wiring live here; the work is done by :mod:`lcirc_plugins.app.handlers` (testable without
a server). Per-user state is a ``gr.State`` session dict, so users' books and chats stay apart; the shared
model runs under the queue's concurrency limit.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from . import handlers
from .handlers import PLAIN_MODE, QD_MODE, AppContext

try:
    import gradio as gr
except ImportError as err:  # pragma: no cover - depends on the installation
    raise MissingDependencyError("the app needs Gradio: pip install 'lcirc-plugins[app]'") from err

from .api_checks import checked_payload, checked_slider, clear_payload_errors  # after the gradio check above

TITLE = "LCIRC book chat"
CSS = "#provenance blockquote {font-size: 0.9em; border-left: 3px solid #c33; padding-left: 0.6em;}"


def use_data_dir_for_uploads(data_dir: str | Path) -> Path:
    """Make Gradio write uploaded files inside the app's data folder (call before ``build_app``)."""
    folder = Path(data_dir).expanduser().resolve() / "gradio-uploads"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX=2`` would, before the server starts its threads.

    Otherwise every worker thread gets its own arena and freed memory stays fragmented across them: under
    20 simulated users the server's live RSS kept creeping up (+346 MB in 5 minutes); with two arenas it
    stayed flat (docs/RELIABILITY.md). A ``MALLOC_ARENA_MAX`` set by the user wins; not glibc: no-op.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, count))  # -8 is M_ARENA_MAX in <malloc.h>
    except (OSError, AttributeError):
        return False


def build_app(ctx: AppContext) -> gr.Blocks:
    """The app's ``gr.Blocks`` for one model and library."""
    use_data_dir_for_uploads(ctx.library.data_dir)
    mode_note = (
        "The adapter is query-dependent: **QD-LCIRC** recompresses the book for each question, **LCIRC** reuses the stored memory."
        if ctx.query_dependent
        else "This adapter is not query-dependent, so LCIRC and QD-LCIRC are the same here (the switch is disabled)."
    )

    # delete_cache: Gradio keeps its own copy of every upload (in data_dir/gradio-uploads); drop them after a day.
    with gr.Blocks(title=TITLE, delete_cache=(3600, 86400)) as demo:
        session = gr.State(handlers.new_session())
        gr.Markdown(f"# {TITLE}\nUpload books (.txt, .md, .pdf, .epub), then ask questions about them.")
        gr.Markdown(ctx.status.markdown(), elem_id="model-status")  # what answers, before the first question
        with gr.Row():
            with gr.Column(scale=1):
                files = clear_payload_errors(
                    gr.File(label="Books", file_count="multiple", file_types=list(handlers.UPLOAD_EXTENSIONS), elem_id="upload"),
                    "files must be a list of uploaded files (gradio_client.handle_file(path) for each)",
                )
                add = gr.Button("Compress and add to library", variant="primary", elem_id="add")
                status = gr.Markdown(elem_id="status")
                picker = checked_payload(
                    gr.Dropdown(
                        label="Ask about", choices=[], value=[], multiselect=True, allow_custom_value=True, elem_id="picker"
                    ),
                    handlers.check_book_keys,
                )
                with gr.Accordion("Generation settings", open=False):
                    max_new_tokens = checked_slider(
                        gr.Slider(8, 512, value=128, step=8, label="Max new tokens"), "max_new_tokens"
                    )
                    temperature = checked_slider(
                        gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)"), "temperature"
                    )
                    mode = checked_payload(
                        gr.Radio(
                            [QD_MODE, PLAIN_MODE],
                            value=QD_MODE if ctx.query_dependent else PLAIN_MODE,
                            label="Memory",
                            interactive=ctx.query_dependent,
                        ),
                        lambda value: handlers.check_choice("mode", value, (QD_MODE, PLAIN_MODE)),
                    )
                    gr.Markdown(mode_note)
            with gr.Column(scale=2):
                chatbot = clear_payload_errors(
                    gr.Chatbot(label="Chat", height=420, elem_id="chat"),
                    "history must be a list of chat messages like {'role': 'user', 'content': '...'}",
                )
                question = checked_payload(
                    gr.Textbox(label="Question", placeholder="Who is Long John Silver?", elem_id="question"),
                    lambda value: handlers.check_text("question", value),
                )
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                    clear_button = gr.Button("Clear chat", elem_id="clear")
                with gr.Column(elem_id="provenance"):
                    provenance_md = gr.Markdown(f"_{handlers.PROVENANCE_NOTE}_", elem_id="provenance-text")
                    provenance_plot = gr.Plot(label="What the answer read, along the book", elem_id="provenance-plot")

        def refresh(state: dict[str, Any], selected: list[str] | None) -> Any:
            choices = handlers.book_choices(ctx, state)
            keys = {k for _, k in choices}
            return gr.Dropdown(choices=choices, value=[k for k in (selected or []) if k in keys])

        def on_add(
            uploaded: list[Any] | None,
            state: dict[str, Any],
            selected: list[str] | None,
            progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
        ) -> tuple[Any, ...]:
            result = handlers.add_books(ctx, state, uploaded, progress=lambda fraction, desc: progress(fraction, desc=desc))
            for message in result.messages:
                if message.level == "warning":
                    gr.Warning(message.text)
            choices = handlers.book_choices(ctx, result.session)
            keys = {k for _, k in choices}
            chosen = [e.key for e in result.added] or [k for k in (selected or []) if k in keys]
            return result.session, result.status, gr.Dropdown(choices=choices, value=chosen), None

        def on_ask(
            text: str,
            selected: list[str] | None,
            history: list[dict[str, Any]] | None,
            new_tokens: float,
            temp: float,
            memory_mode: str,
            state: dict[str, Any],
        ):
            if not (selected or []):
                gr.Warning(handlers.NO_BOOK_MESSAGE)
            for chat, markdown, figure in handlers.ask(
                ctx, state, text, selected, history, max_new_tokens=int(new_tokens), temperature=float(temp), mode=memory_mode
            ):
                yield chat, markdown, figure, ""

        demo.load(refresh, [session, picker], [picker], api_name=False)
        add.click(
            on_add, [files, session, picker], [session, status, picker, files], api_name="add_books", concurrency_id="model"
        )
        ask_inputs = [question, picker, chatbot, max_new_tokens, temperature, mode, session]
        ask_outputs = [chatbot, provenance_md, provenance_plot, question]
        asking = ask_button.click(on_ask, ask_inputs, ask_outputs, api_name="ask", concurrency_id="model")
        submitting = question.submit(on_ask, ask_inputs, ask_outputs, api_name=False, concurrency_id="model")
        stop_button.click(None, None, None, cancels=[asking, submitting], api_name=False)
        clear_button.click(
            lambda: ([], f"_{handlers.PROVENANCE_NOTE}_", None), None, [chatbot, provenance_md, provenance_plot], api_name=False
        )
    return demo


def launch(
    ctx: AppContext,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_upload_mb: float = 50,
    concurrency: int = 1,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> gr.Blocks:
    """Build, queue and launch the app; returns the running ``gr.Blocks`` (``close()`` stops it)."""
    limit_malloc_arenas()
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=concurrency)
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=int(max_upload_mb * 1024 * 1024),
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        css=CSS,
        theme=gr.themes.Soft(),
        footer_links=["api"],
    )
    return demo
