"""The ``lcirc`` command: compress a book once, then ask questions about it from the saved memory.

Inputs (book, memory, question, output path) are read and checked before the model is loaded, so a typo
fails in a fraction of a second. torch and the model code are imported only by the commands that need them
(``lcirc --help`` and ``lcirc cache`` import neither). Every error a user can cause ends as one
``error: ...`` line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .data.documents import SUPPORTED_EXTENSIONS, Document, read_document
from .errors import EmptyInputError, LCIRCError
from .model.bundled import DEFAULT_BACKBONE
from .model.status import model_status

if TYPE_CHECKING:
    from .model.lcirc_model import LCIRCModel
    from .model.memory import CompressedMemory
    from .model.provenance import Provenance

MEMORY_SUFFIX = ".safetensors"


# ----- helpers ------------------------------------------------------------------------------------------


def load_model(adapter: str, backbone: str | None, trust_remote_code: bool = False) -> LCIRCModel:
    """``model.loading.load_model``, with its warnings printed as one plain ``warning: ...`` line each.

    The untrained-adapter warning is left out: :func:`print_status` says the same, plainly, on stdout.
    """
    from .model.loading import UntrainedAdapterWarning
    from .model.loading import load_model as _load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = _load_model(adapter, backbone, trust_remote_code=trust_remote_code)
    for warning in caught:
        if issubclass(warning.category, UserWarning) and not issubclass(warning.category, UntrainedAdapterWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    return model


def print_status(model: LCIRCModel, adapter: str) -> None:
    """Which backbone and adapter answer, and what an untrained adapter means, before the answer."""
    print("\n".join(model_status(model, adapter).lines()), end="\n\n", flush=True)


def is_memory_path(path: str | Path) -> bool:
    return str(path).endswith(MEMORY_SUFFIX)


def document_metadata(doc: Document, base: CompressedMemory | None = None) -> dict[str, Any]:
    """Title, source and chapter offsets; an appended document becomes a section of the existing memory."""
    if base is None:
        return {"title": doc.title, "source": doc.source, "sections": [list(s) for s in doc.sections]}
    offset = base.num_chars
    sections = list(base.metadata.get("sections", []))
    sections.append([doc.title, offset])
    sections.extend([title, start + offset] for title, start in doc.sections)
    return {
        "title": base.metadata.get("title", doc.title),
        "source": base.metadata.get("source", doc.source),
        "sections": sections,
    }


def check_output_path(path: Path) -> None:
    if not is_memory_path(path):
        raise LCIRCError(f"the memory file name must end in {MEMORY_SUFFIX} (e.g. book.memory{MEMORY_SUFFIX}), got {path}")
    if not path.parent.is_dir():
        raise LCIRCError(f"cannot write {path}: the folder {path.parent} does not exist")


def check_question(question: str) -> str:
    if not question.strip():
        raise EmptyInputError("the question is empty")
    return question


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def summary_line(memory: CompressedMemory, seconds: float, path: Path, appended: int | None = None) -> str:
    ratio = f"({memory.compression_ratio:.1f}x) in {seconds:.1f} s -> {path}"
    if appended is None:
        return f"Compressed {memory.num_tokens:,} tokens into {memory.num_vectors:,} memory vectors {ratio}"
    return f"Appended {appended:,} tokens: the memory now holds {memory.num_tokens:,} tokens in {memory.num_vectors:,} vectors {ratio}"


def describe(memory: CompressedMemory) -> str:
    """What ``lcirc info`` prints: enough to know what a memory file holds and which model can read it."""
    meta = memory.metadata
    rows = [
        ("title", meta.get("title", "(none)")),
        ("source", meta.get("source", "(unknown)")),
        ("tokens", f"{memory.num_tokens:,} ({memory.num_chars:,} characters)"),
        ("segments", f"{memory.num_segments:,} of up to {memory.segment_len} tokens"),
        ("vectors", f"{memory.num_vectors:,} ({memory.num_latents} per segment, d={memory.features.shape[-1]})"),
        ("ratio", f"{memory.compression_ratio:.1f}x"),
        ("sections", str(len(meta.get("sections", [])))),
        ("adapter", " ".join([memory.adapter_fingerprint, *([f"- {meta['adapter']}"] if meta.get("adapter") else [])])),
        ("backbone", str(memory.backbone.get("name_or_path") or memory.backbone.get("model_type", "?"))),
    ]
    return "\n".join(f"{name + ':':<10} {value}" for name, value in rows)


# ----- subcommands --------------------------------------------------------------------------------------


def cmd_compress(args: argparse.Namespace) -> int:
    from .model.memory import CompressedMemory

    output = Path(args.output)
    check_output_path(output)
    base = CompressedMemory.load(args.append) if args.append else None
    doc = read_document(args.book)
    backbone = args.backbone or (base.backbone.get("name_or_path") if base else None)
    model = load_model(args.adapter, backbone, args.trust_remote_code)
    print_status(model, args.adapter)
    start = time.perf_counter()
    metadata = {**document_metadata(doc, base), "adapter": model_status(model, args.adapter).adapter_kind}
    memory = model.compress(doc.text, memory=base, progress=True, metadata=metadata)
    seconds = time.perf_counter() - start
    memory.save(output)
    appended = None if base is None else memory.num_tokens - base.num_tokens
    print(summary_line(memory, seconds, output, appended))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from .model.memory import CompressedMemory

    question = check_question(args.question)
    memory: CompressedMemory | None = None
    doc: Document | None = None
    if is_memory_path(args.source):
        memory = CompressedMemory.load(args.source)
    else:
        doc = read_document(args.source)
    backbone = args.backbone or (memory.backbone.get("name_or_path") if memory else None)
    model = load_model(args.adapter, backbone, args.trust_remote_code)
    print_status(model, args.adapter)
    if doc is not None:
        memory = model.compress(doc.text, progress=True, metadata=document_metadata(doc))
    prepared = model.prepare_answer(question, memory, max_new_tokens=args.max_new_tokens)
    if args.stream:
        pieces = []
        for piece in model.stream_text(prepared, max_new_tokens=args.max_new_tokens):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        answer = "".join(pieces).strip()
    else:
        answer = model.generate_text(prepared, max_new_tokens=args.max_new_tokens)[0]
        print(answer)
    if args.sources:
        print_sources(model.provenance(prepared, answer))
    return 0


def print_sources(found: Provenance) -> None:
    """The passages behind the answer (``LCIRCModel.provenance``), one quoted line each."""
    how = {"attention": "by the adapter's attention", "bm25": "by BM25 (the adapter's gates are closed)"}.get(found.method, "")
    print(f"\nsources, {how}:" if found.passages else "\nsources: no passage (the answer read no memory)")
    for rank, p in enumerate(found.passages, 1):
        quote = " ".join(p.text.split())
        print(f"  [{rank}] segment {p.segment}, characters {p.start}-{p.end}, score {p.score:.4f}: {quote[:200]!r}")


def cmd_info(args: argparse.Namespace) -> int:
    from .model.memory import CompressedMemory

    print(describe(CompressedMemory.load(args.memory)))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``lcirc cache info|clear``: the converted backbones (GGUF de-quantized once, then memory-mapped)."""
    from .model.backbone_cache import backbones_dir, cache_entries, clear_cache

    if args.action == "clear":
        print(f"freed {clear_cache() / 1e6:,.1f} MB in {backbones_dir()}")
        return 0
    entries = cache_entries()
    print(f"{backbones_dir()}: " + (f"{len(entries)} converted backbone(s)" if entries else "no converted backbones yet"))
    for e in entries:
        state = "ok" if e.ok else "damaged (rebuilt on next load)"
        print(f"  {e.key[:12]}  {e.dtype:<9} {e.bytes / 1e6:8,.1f} MB  {state}  {e.source}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Re-save a trained adapter in a smaller dtype (how the shipped bf16 default is made)."""
    import torch

    from .model.adapter import load_adapter_weights
    from .model.lcirc_model import LCIRCModel

    chosen = {"memory_sink": args.memory_sink, "whole_near_prompt": args.whole_near_prompt}
    overrides = {name: value for name, value in chosen.items() if value is not None}  # the rest: as saved
    model = LCIRCModel.from_pretrained(args.adapter_dir, backbone=args.backbone, config_overrides=overrides)
    if args.memory_sink is not None:  # grown or replaced: every head's sink is the value chosen by measurement
        with torch.no_grad():
            for name, param in model.adapter.named_parameters():
                if name.endswith("attn_sink"):
                    param.fill_(args.memory_sink)
    path = model.save_pretrained(args.output, dtype=getattr(torch, args.dtype))
    load_adapter_weights(model.adapter, path)  # the fingerprint printed is the one the export loads with (rounded weights)
    size = sum(f.stat().st_size for f in Path(path).iterdir()) / 1e6
    print(f"{path}: {size:.1f} MB ({args.dtype}), fingerprint {model.adapter_fingerprint[:12]}")
    return 0


def cmd_graft(args: argparse.Namespace) -> int:
    """An adapter whose whole readers start as another adapter's readers (R12's start in docs/TRAINING_FINDINGS.md)."""
    import torch

    from .model.lcirc_model import LCIRCModel

    overrides = {"whole_reader": True, "whole_segments": args.whole_segments, "whole_softmax": args.whole_softmax, "whole_beside": args.whole_beside}
    model = LCIRCModel.from_pretrained(args.adapter_dir, backbone=args.backbone, config_overrides=overrides)
    donor = LCIRCModel.from_pretrained(args.whole_from, backbone=model.backbone, tokenizer=model.tokenizer)
    donor.injector.detach()  # (loading it checked that it was trained on this backbone)
    model.adapter.graft_whole_readers(donor.adapter)
    path = model.save_pretrained(args.output, dtype=getattr(torch, args.dtype))
    print(f"{path}: whole readers from {args.whole_from} ({args.whole_softmax} softmax), fingerprint {model.adapter_fingerprint[:12]}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """An adapter that reads its memory at fewer decoder layers (docs/TRAINING_FINDINGS.md, "Fewer memory layers")."""
    from .model.adapter import keep_memory_layers

    path = keep_memory_layers(args.adapter_dir, args.keep_layers, args.output)
    print(f"{path}: reads its memory at layers {sorted(set(args.keep_layers))}; compress books again with it")
    return 0


# ----- parser and entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcirc",
        description="Compress long documents into an LCIRC memory and ask questions about them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument("--adapter", default="default", help="'default' (the shipped adapter) or an adapter directory")
    model_options.add_argument("--backbone", default=None, help=f"backbone name, folder or .gguf (default: the adapter's, else {DEFAULT_BACKBONE})")
    model_options.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the backbone folder")
    formats = ", ".join(SUPPORTED_EXTENSIONS)

    compress = commands.add_parser("compress", parents=[model_options], help="compress a book into a memory file")
    compress.add_argument("book", help=f"the document to compress ({formats})")
    compress.add_argument("-o", "--output", required=True, help=f"the memory file to write (*{MEMORY_SUFFIX})")
    compress.add_argument("--append", metavar="EXISTING_MEMORY", help="continue this memory with the book (the recurrence goes on)")
    compress.set_defaults(func=cmd_compress)

    ask = commands.add_parser("ask", parents=[model_options], help="answer a question about a memory file or a book")
    ask.add_argument("source", metavar="MEMORY_OR_BOOK", help=f"a *{MEMORY_SUFFIX} memory, or a document to compress first")
    ask.add_argument("question")
    ask.add_argument("--max-new-tokens", type=positive_int, default=128)
    ask.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True, help="print the answer as it is generated")
    ask.add_argument("--sources", action="store_true", help="after the answer, print the passages it read most (provenance)")
    ask.set_defaults(func=cmd_ask)

    export = commands.add_parser("export", help="re-save an adapter in another dtype (e.g. bf16 for shipping)")
    export.add_argument("adapter_dir")
    export.add_argument("-o", "--output", required=True, help="directory to write")
    export.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    export.add_argument("--backbone", default=None, help="backbone (default: the one the adapter records)")
    export.add_argument(
        "--memory-sink", type=float, default=None, metavar="LOGIT", help="give every memory-reading head a sink of this logit (docs/TRAINING_FINDINGS.md, R18)"
    )
    export.add_argument(
        "--whole-near-prompt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the question's whole segments just before the prompt (needs whole readers; default: as the adapter was saved)",
    )
    export.set_defaults(func=cmd_export)

    graft = commands.add_parser("graft", help="give an adapter whole readers copied from another adapter's readers")
    graft.add_argument("adapter_dir", help="the adapter whose slot readers, compressor and QD mixer are kept")
    graft.add_argument("--whole-from", required=True, help="the adapter whose readers become the whole readers")
    graft.add_argument("-o", "--output", required=True, help="directory to write")
    graft.add_argument("--whole-segments", type=positive_int, default=2, help="segments a question reads whole")
    graft.add_argument("--whole-softmax", choices=["separate", "joint"], default="joint")
    graft.add_argument("--whole-beside", action="store_true", help="keep a whole segment's slots beside its whole rows")
    graft.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="float32")
    graft.add_argument("--backbone", default=None, help="backbone (default: the one the adapter records)")
    graft.set_defaults(func=cmd_graft)

    prune = commands.add_parser("prune", help="keep an adapter's memory readers at some decoder layers only")
    prune.add_argument("adapter_dir", help="the adapter to prune (left as it is)")
    prune.add_argument("--keep-layers", type=int, nargs="+", required=True, metavar="LAYER", help="decoder layers that keep reading the memory")
    prune.add_argument("-o", "--output", required=True, help="directory to write")
    prune.set_defaults(func=cmd_prune)

    info = commands.add_parser("info", help="describe a memory file")
    info.add_argument("memory")
    info.set_defaults(func=cmd_info)

    cache = commands.add_parser("cache", help="show or clear the converted-backbone cache")
    cache.add_argument("action", choices=["info", "clear"], help="info: list the entries; clear: delete them all")
    cache.set_defaults(func=cmd_cache)
    return parser


def error_message(err: BaseException) -> str:
    """The message to show; an OSError from the file system gets a plain sentence instead of its errno form."""
    if isinstance(err, FileNotFoundError) and not isinstance(err, LCIRCError) and err.filename:
        return f"{err.filename}: no such file or directory"
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lcirc`` command; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LCIRCError, FileNotFoundError) as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
