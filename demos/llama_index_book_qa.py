"""Ask a question about a whole book through LlamaIndex and QD-LCIRC, and see the passages behind the answer.

The book is compressed once into memory (a ``CompressedMemoryIndex``); the answer is generated from that
memory by ``LCIRCLLM``, and the retriever's top passages are printed with their character spans.

    python demos/llama_index_book_qa.py
    python demos/llama_index_book_qa.py "Who is Jonathan Harker?" --book "$LCIRC_SHARED_DATA/books/stoker-dracula.txt"
    python demos/llama_index_book_qa.py "Who is Ben Gunn?" --persist-dir storage/treasure-island   # compress once, reuse

Without a trained adapter (none is shipped yet) the default LLM falls back to an untrained one and says so:
the answer is then SmolLM2's own, while the passages are found all the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lcirc_plugins.data.shared import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BOOK = str(shared_data_dir() / "books" / "stevenson-treasure-island.txt")


def resolve_book(path: str) -> Path:
    """The path as given, or relative to the repository root (so the default works from any folder)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.exists() or candidate.is_absolute() else REPO / candidate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default="Who is Long John Silver?", help="the question to ask")
    parser.add_argument("--book", default=DEFAULT_BOOK, help=f"txt, md, pdf or epub (default: {DEFAULT_BOOK})")
    parser.add_argument("--adapter", default="default", help="adapter directory, or 'default'")
    parser.add_argument("--backbone", default=None, help="backbone name, folder or .gguf (default: the adapter's)")
    parser.add_argument("--top-k", type=int, default=3, help="passages to retrieve and print")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="longest answer, in tokens")
    parser.add_argument("--persist-dir", default=None, help="storage folder: loaded if it holds an index, else written")
    args = parser.parse_args(argv)

    from llama_index.core import Document

    from lcirc_plugins.data.documents import read_document
    from lcirc_plugins.errors import LCIRCError
    from lcirc_plugins.llama_index import LCIRCLLM, CompressedMemoryIndex

    try:
        started = time.perf_counter()
        llm = LCIRCLLM(args.adapter, backbone=args.backbone, max_new_tokens=args.max_new_tokens)
        print(f"model: {llm.metadata.model_name} ({time.perf_counter() - started:.0f} s to load)")
        storage = Path(args.persist_dir) if args.persist_dir else None
        if storage is not None and (storage / "index_store.json").is_file():
            index = CompressedMemoryIndex.from_persist_dir(storage, llm=llm)
            print(f"loaded the compressed book from {storage} (delete the folder to compress another book)")
        else:
            book = resolve_book(args.book)
            source = read_document(book)
            document = Document(text=source.text, id_=book.stem, metadata={"title": source.title, "file_name": book.name})
            started = time.perf_counter()
            index = CompressedMemoryIndex.from_documents([document], llm=llm, show_progress=True)
            print(f"compressed {book.name} in {time.perf_counter() - started:.0f} s")
            if storage is not None:
                index.storage_context.persist(persist_dir=str(storage))
                print(f"saved to {storage} (memories in {storage / 'lcirc_memories'})")
        for memory_id in index.memory_ids:
            print(f"memory: {index.memory(memory_id)}")

        print(f"\nQ: {args.question}\nA: ", end="", flush=True)
        response = index.as_query_engine(streaming=True, similarity_top_k=args.top_k).query(args.question)
        for piece in response.response_gen:
            print(piece, end="", flush=True)
        print("\n\nTop passages (BM25 over the book's segments; spans are character offsets in the book):")
        for rank, hit in enumerate(response.source_nodes, 1):
            meta = hit.node.metadata
            excerpt = " ".join(hit.node.text.split())
            print(
                f"[{rank}] score {hit.score:.2f}  chars {meta['start']:,}-{meta['end']:,}  segment {meta['segment']}  ({meta['title']})"
            )
            print(f"    {excerpt[:300]}{'...' if len(excerpt) > 300 else ''}")
    except (LCIRCError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
