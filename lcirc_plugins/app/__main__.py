"""``lcirc-app``: start the book-chat app on a local port.

lcirc-app                                   # default backbone and adapter, http://127.0.0.1:7860
lcirc-app --adapter ./my-adapter --port 8000 --max-upload-mb 20 --concurrency 2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DATA_DIR = Path("~/.cache/lcirc-plugins/app")
FALLBACK_DATA_DIR = Path("./lcirc-app-data")


def default_data_dir() -> Path:
    """``~/.cache/lcirc-plugins/app`` when it can be created, else ``./lcirc-app-data``."""
    folder = DEFAULT_DATA_DIR.expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return FALLBACK_DATA_DIR.resolve()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcirc-app", description="Chat with long books through QD-LCIRC compressed memory.")
    p.add_argument(
        "--backbone",
        default=None,
        help="backbone: HF id, local folder or GGUF file (default: the adapter's, or smollm2-135m-instruct)",
    )
    p.add_argument(
        "--adapter",
        default="default",
        help="adapter directory (default: the shipped one, or an untrained adapter while none is shipped)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"library and uploads folder (default: {DEFAULT_DATA_DIR} or {FALLBACK_DATA_DIR})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload in MB (default 50)")
    p.add_argument(
        "--concurrency", type=int, default=1, help="how many compressions/answers run at once; the rest wait in the queue"
    )
    p.add_argument(
        "--private-library", action="store_true", help="each session sees only the books it uploaded (default: all library books)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.max_upload_mb <= 0 or args.concurrency < 1:
        print("error: --max-upload-mb must be > 0 and --concurrency >= 1", file=sys.stderr)
        return 2
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ["GRADIO_TEMP_DIR"] = str(data_dir / "gradio-uploads")  # before gradio is imported

    from ..cli import load_model, print_status
    from ..errors import LCIRCError
    from .handlers import AppContext
    from .ui import launch

    try:
        model = load_model(args.adapter, args.backbone)
    except LCIRCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_status(model, args.adapter)
    ctx = AppContext.create(
        model,
        data_dir,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        share_library=not args.private_library,
        adapter=args.adapter,
    )
    print(f"library: {data_dir} ({len(ctx.library.books())} books for this model)")
    launch(ctx, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, concurrency=args.concurrency)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
