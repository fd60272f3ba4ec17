"""Haystacks: real text (books, essays) read from files, cut to a length in characters or tokens at a clean break."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

from lcirc_plugins.errors import EmptyInputError

from .examples import Tokenizer

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

HAYSTACK_EXTENSIONS = (".txt", ".md")
# Files in a data folder that describe the data and are not part of it.
_NOT_HAYSTACK = re.compile(r"^(sources|readme|license|licence|copying)(\.|$)", re.IGNORECASE)

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends with . ! or ?, possibly followed by closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*\s+(?=\S)")
_CLOSING_PUNCTUATION = re.compile(r"[.!?][\"'\u2019\u201d)\]]*(?=\s)")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "no", "mt", "capt", "col", "gen", "lt"})
# How far past a random offset a paragraph break is looked for before settling for a sentence start
# (the essay haystack lost most of its paragraph breaks when it was scraped).
_MAX_PARAGRAPH_SEEK = 2000
_MAX_TRIES = 20
_TOKEN_TOLERANCE = 0.005  # the length loop stops when within 0.5% of the requested token count

_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG EBOOK[^\n]*\n", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(
    r"^(?:\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG EBOOK|End of (?:the )?Project Gutenberg)", re.IGNORECASE | re.MULTILINE
)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence footer if present, so haystacks are the book's prose.

    The licence is ~3,000 words of legal text per book: as a haystack it would be the same text in every
    book, and cloze questions on it ("Project ____ Literary Archive Foundation") would be meaningless.
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def load_haystack(path_or_dir: str | os.PathLike[str], *, gutenberg: bool = True) -> str:
    """Read a .txt/.md file, or every .txt/.md file of a folder (sorted by name, joined by a blank line).

    Files are decoded as UTF-8 with an optional byte-order mark, and CRLF/CR line endings become LF, so
    character offsets mean the same on every platform. ``SOURCES.md``/``README``/licence files of a data
    folder are skipped. With ``gutenberg=True`` Project Gutenberg headers and footers are removed.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in HAYSTACK_EXTENSIONS and not _NOT_HAYSTACK.match(p.name)
        )
        if not files:
            raise EmptyInputError(f"{path}: no {'/'.join(HAYSTACK_EXTENSIONS)} haystack files in this folder")
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"haystack not found: {path}")
    texts = []
    for file in files:
        text = file.read_text(encoding="utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        text = strip_gutenberg(text) if gutenberg else text.strip()
        if text:
            texts.append(text)
    if not texts:
        raise EmptyInputError(f"{path}: the haystack text is empty")
    return "\n\n".join(texts)


def count_tokens(text: str, tokenizer: Tokenizer) -> int:
    """Number of tokens of ``text`` without special tokens (what a context adds to a prompt)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def take_piece(
    text: str,
    seed: int | random.Random,
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> str:
    """A piece of ``text`` of about ``length_chars`` characters, or ``num_tokens`` tokens with ``tokenizer``.

    It starts at a seeded random offset moved to the next paragraph start (or sentence start when no
    paragraph break is near, as in scraped essays) and ends at a word boundary. If ``text`` is too short,
    it continues from the start of ``text`` again (paragraph-separated), so any length can be made.
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    _check_length(length_chars, num_tokens, tokenizer)
    start = _random_start(text, rng)
    return _cut(text, start, length_chars, num_tokens, tokenizer)


def _check_length(length_chars: int | None, num_tokens: int | None, tokenizer: Tokenizer | None) -> None:
    if (length_chars is None) == (num_tokens is None):
        raise ValueError("give exactly one of length_chars and num_tokens (with a tokenizer)")
    if num_tokens is not None and tokenizer is None:
        raise ValueError("num_tokens needs a tokenizer to count tokens with")
    if (length_chars if length_chars is not None else num_tokens) <= 0:  # type: ignore[operator]
        raise ValueError("the requested length must be positive")


def _as_text(haystack: str | os.PathLike[str], name: str = "haystack") -> str:
    """Accept haystack text or a Path; refuse a str that is obviously a path rather than text."""
    if isinstance(haystack, os.PathLike):
        return load_haystack(haystack)
    if not isinstance(haystack, str) or not haystack.strip():
        raise EmptyInputError(f"{name} is empty: pass the text (load_haystack(path)) or a pathlib.Path")
    if not any(c.isspace() for c in haystack.strip()):
        raise ValueError(f"{name} {haystack[:80]!r} looks like a path, not text: pass load_haystack(path) or Path(...)")
    return haystack


def _random_start(text: str, rng: random.Random) -> int:
    pos = rng.randrange(len(text))
    para = _PARAGRAPH_BREAK.search(text, pos, min(len(text), pos + _MAX_PARAGRAPH_SEEK))
    if para and para.end() < len(text):
        return para.end()
    sentence = _SENTENCE_END.search(text, pos)
    return sentence.end() if sentence else 0


def _cyclic(text: str, start: int, min_chars: int, joiner: str) -> str:
    """The first ``min_chars`` characters of ``text[start:]`` continued with ``text`` again as needed."""
    parts, size = [text[start : start + min_chars]], min(len(text) - start, min_chars)
    while size < min_chars:
        parts.append(joiner + text[: min_chars - size])
        size += len(parts[-1])
    return "".join(parts)[:min_chars]


def _cut(text: str, start: int, length_chars: int | None, num_tokens: int | None, tokenizer: Tokenizer | None) -> str:
    joiner = "\n\n" if "\n" in text else " "  # filler runs on as one paragraph; real text keeps paragraphs
    if num_tokens is None:
        assert length_chars is not None
        buf = _cyclic(text, start, length_chars + 1, joiner)
        return _clean_end(buf, length_chars)
    assert tokenizer is not None
    estimate = num_tokens * 5 + 64
    while True:
        buf = _cyclic(text, start, estimate, joiner)
        try:
            enc = tokenizer(buf, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers have no offsets
            enc, offsets = tokenizer(buf, add_special_tokens=False), None
        ids = enc["input_ids"]
        if len(ids) > num_tokens:
            break
        estimate = int(len(buf) * 1.3 * num_tokens / max(len(ids), 1)) + 64
    end = offsets[num_tokens][0] if offsets is not None else len(tokenizer.decode(ids[:num_tokens]))  # type: ignore[attr-defined]
    return _clean_end(buf, end)


def _clean_end(buf: str, end: int) -> str:
    """``buf[:end]``, its end moved back to a sentence end if one is near (within 1% of the length, at most
    200 characters), else to a word end: contexts end cleanly, a little under the length asked for."""
    if end >= len(buf):
        return buf.rstrip()
    window = min(200, end // 100)
    ends = [m.end() for m in _CLOSING_PUNCTUATION.finditer(buf, max(0, end - window), end + 1)]
    if ends:
        return buf[: ends[-1]]
    cut = end if buf[end].isspace() else max(buf.rfind(" ", 0, end), buf.rfind("\n", 0, end))
    return buf[: cut if cut > end - 40 else end].rstrip()
