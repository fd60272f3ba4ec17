"""Read books and documents (txt, markdown, PDF, EPUB) into plain text for compression.

Every failure a user can cause (wrong format, binary file, empty or scanned PDF, file too big) raises an
``LCIRCError`` subclass whose message names the file and says what to do, so the app and the integrations
can show it as is. PDF and EPUB support is optional (the ``docs`` extra) and imported only when needed.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from lcirc_plugins.errors import (
    BinaryInputError,
    CorruptFileError,
    EmptyInputError,
    InputTooLargeError,
    MissingDependencyError,
    UnsupportedFormatError,
)

TEXT_EXTENSIONS = (".txt", ".text", ".md", ".markdown", ".rst")
SUPPORTED_EXTENSIONS = TEXT_EXTENSIONS + (".pdf", ".epub")

_ALLOWED_CONTROLS = frozenset("\n\r\t\f")
_MAX_CONTROL_FRACTION = 0.10
_CONTROL_SAMPLE_CHARS = 100_000
_DOCS_EXTRA_HINT = "pip install 'lcirc-plugins[docs]'"
# Plain-text books have no structure in the file format: recognise the usual chapter headings
# ("CHAPTER IV ...", "Chapter 1", "PART ONE--The Old Buccaneer", markdown "## Title", and a bare chapter
# number on its own line followed by a title line, as in Project Gutenberg's Treasure Island).
_NUMERAL = r"(?:[0-9]{1,3}|[IVXLCDM]{1,7}|[ivxlcdm]{1,7}|ONE|TWO|THREE|FOUR|FIVE|SIX|SEVEN|EIGHT|NINE|TEN|One|Two|Three|Four|Five|Six|Seven|Eight|Nine|Ten)\b"
_HEADING = re.compile(
    r"^[ \t]*((?:CHAPTER|Chapter|BOOK|Book|PART|Part|STAVE|Stave|VOLUME|Volume)[ \t]+"
    + _NUMERAL
    + r"[^\n]{0,80}|#{1,3}[ \t]+[^\n]{1,80})[ \t]*$",
    re.MULTILINE,
)
_NUMBERED = re.compile(r"(?:^|\n)[ \t]*\n([0-9]{1,3})[ \t]*\n[ \t]*\n([^\n]{2,80}?)[ \t]*\n[ \t]*\n")


@dataclass(frozen=True)
class Document:
    """The text of a document plus where its chapters start, so callers can cite or split by chapter."""

    text: str
    title: str
    source: str
    sections: list[tuple[str, int]] = field(default_factory=list)  # (chapter title, offset in text)


# ---------------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------------


def read_document(path: str | os.PathLike[str], *, max_bytes: int | None = 50_000_000) -> Document:
    """Read a txt/markdown/rst, PDF or EPUB file as text, refusing files that are too big or not text.

    The size is checked before reading so a huge upload never gets loaded into memory.
    Raises ``FileNotFoundError`` if the file does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFormatError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
            f"supported extensions are {', '.join(SUPPORTED_EXTENSIONS)}. "
            "Convert the file to one of these (plain text works for anything)."
        )

    size = path.stat().st_size  # FileNotFoundError for a missing file, on purpose
    if max_bytes is not None and size > max_bytes:
        raise InputTooLargeError(
            f"{path} is {_megabytes(size)}, over the limit of {_megabytes(max_bytes)} (max_bytes). "
            "Split the document or raise max_bytes."
        )

    if suffix == ".pdf":
        doc = _read_pdf(path)
    elif suffix == ".epub":
        doc = _read_epub(path)
    else:
        doc = Document(text=read_text_bytes(path.read_bytes(), name=str(path)), title=path.stem, source=str(path))
    validate_text(doc.text, source=doc.source)
    if not doc.sections:  # no structure in the format (txt, md, pdf): find the chapter headings in the text
        doc = replace(doc, sections=text_sections(doc.text))
    return doc


def text_sections(text: str) -> list[tuple[str, int]]:
    """Chapter headings of a plain-text/markdown book as (title, character offset), in order.

    A table of contents lists the headings again near the start: when a heading's first two words come
    again later, only the later one (the real chapter) is kept.
    """
    found = [(m.group(1).strip().lstrip("#").strip(), m.start(1)) for m in _HEADING.finditer(text)]
    found += [(f"{m.group(1)}. {m.group(2).strip()}", m.start(1)) for m in _NUMBERED.finditer(text)]
    found.sort(key=lambda item: item[1])
    keys = [" ".join(re.split(r"[\s\-.:]+", title.upper())[:2]) for title, _ in found]
    return [item for i, item in enumerate(found) if keys[i] not in keys[i + 1 :]]


def chapter_at(sections: Sequence[Sequence[Any]], offset: int) -> str | None:
    """The title of the chapter containing character ``offset`` (None before the first one)."""
    current = None
    for title, start in sections:
        if int(start) > offset:
            break
        current = str(title)
    return current

def check_unicode(text: str, *, source: str = "text") -> str:
    """Refuse unpaired surrogates (``"\\ud800"``, left by ``errors="surrogateescape"``): no tokenizer can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BinaryInputError(
            f"{source} is not valid Unicode text: it has an unpaired surrogate code point at character {err.start}."
        ) from None
    return text


def validate_text(text: str, *, source: str = "text") -> str:
    """Reject empty and binary-looking text early, before it is tokenised and compressed for nothing."""
    if not text.strip():
        raise EmptyInputError(f"{source} is empty (or only whitespace): there is no text to compress.")
    check_unicode(text, source=source)
    if "\x00" in text:
        raise BinaryInputError(
            f"{source} does not look like text: it contains NUL characters. Pass a text document, not a binary file."
        )
    if _control_fraction(text) > _MAX_CONTROL_FRACTION:
        raise BinaryInputError(
            f"{source} does not look like text: more than {_MAX_CONTROL_FRACTION:.0%} of its characters are "
            "control characters. Pass a text document, not a binary file."
        )
    return text


def read_text_bytes(data: bytes, *, name: str = "upload") -> str:
    """Decode uploaded bytes like a .txt file: UTF-8 (BOM stripped), else cp1252 if it really looks like text.

    Line endings are normalised to LF so offsets and chunking do not depend on the platform that wrote it.
    The result goes through ``validate_text``, so an empty or binary upload is refused here.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _decode_legacy(data, name)
    return validate_text(_normalise_newlines(text), source=name)


# ---------------------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------------------


def _decode_legacy(data: bytes, name: str) -> str:
    """Fall back to cp1252 (old Windows text files), but never turn a binary file into garbage text."""
    not_text = (
        f"{name} does not look like text: it is not valid UTF-8 and not readable as Windows-1252 either. "
        "If it is a text file, save it as UTF-8 and try again."
    )
    if b"\x00" in data:
        raise BinaryInputError(not_text)
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:  # cp1252 leaves 5 byte values undefined: a sure sign of binary data
        raise BinaryInputError(not_text) from None
    if _control_fraction(text) > _MAX_CONTROL_FRACTION:
        raise BinaryInputError(not_text)
    return text


def _control_fraction(text: str) -> float:
    """Fraction of control characters (other than newline, tab, form feed) in the first 100k characters."""
    sample = text[:_CONTROL_SAMPLE_CHARS]
    if not sample:
        return 0.0
    controls = sum(1 for ch in sample if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc")
    return controls / len(sample)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1_000_000:.1f} MB ({n_bytes:,} bytes)"


# ---------------------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------------------


def _read_pdf(path: Path) -> Document:
    """Extract the text layer of every page; scanned PDFs have none, which we report instead of returning ''."""
    try:
        import pypdf
    except ImportError as exc:
        raise MissingDependencyError(f"Reading PDF files needs pypdf: {_DOCS_EXTRA_HINT}") from exc

    try:
        reader = pypdf.PdfReader(path)
        # pypdf already tried the empty password; PDFs that only restrict printing/copying open fine.
        if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
            raise CorruptFileError(
                f"{path} is an encrypted (password-protected) PDF and cannot be read. "
                "Remove the password (e.g. print it to a new PDF) and try again."
            )
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = _pdf_title(reader) or path.stem
    except CorruptFileError:
        raise
    except Exception as exc:  # pypdf raises many different types on damaged files
        raise CorruptFileError(
            f"{path} could not be read as a PDF (damaged, truncated or encrypted): {exc}. "
            "Try re-saving or re-exporting it."
        ) from exc

    text = _normalise_newlines("\n\n".join(page for page in pages if page))
    if not text.strip():
        raise EmptyInputError(
            f"{path} has no extractable text; it may be scanned images. Run OCR on it (e.g. ocrmypdf) first."
        )
    return Document(text=text, title=title, source=str(path))


def _pdf_title(reader) -> str:
    metadata = reader.metadata
    title = metadata.title if metadata is not None else None
    return str(title).strip() if title else ""


# ---------------------------------------------------------------------------------------------------------
# EPUB
# ---------------------------------------------------------------------------------------------------------


def _read_epub(path: Path) -> Document:
    """Read the chapters in reading (spine) order and remember where each one starts."""
    try:
        import ebooklib
        from ebooklib import epub
    except ImportError as exc:
        raise MissingDependencyError(f"Reading EPUB files needs ebooklib: {_DOCS_EXTRA_HINT}") from exc

    try:
        book = epub.read_epub(str(path), options={"ignore_ncx": True})
        toc_titles = _toc_titles(book.toc)
        chapters: list[tuple[str, str]] = []  # (title, text)
        for idref, _linear in book.spine:
            item = book.get_item_with_id(idref)
            if item is None or isinstance(item, epub.EpubNav) or item.get_type() != ebooklib.ITEM_DOCUMENT:
                continue  # the nav document is a table of contents, not book text
            # the raw file: get_content() re-renders the page through a template and drops parts of it
            heading, text = _xhtml_to_text(item.content.decode("utf-8", errors="replace"))
            if text:
                chapters.append((heading or toc_titles.get(_normpath(item.get_name()), ""), text))
        metadata_titles = book.get_metadata("DC", "title")
    except Exception as exc:  # ebooklib/zipfile/lxml raise many different types on damaged files
        raise CorruptFileError(
            f"{path} could not be read as an EPUB (damaged or not an EPUB): {exc}. Try re-exporting it."
        ) from exc

    parts: list[str] = []
    sections: list[tuple[str, int]] = []
    offset = 0
    for title, text in chapters:
        if title:
            sections.append((title, offset))
        parts.append(text)
        offset += len(text) + 2  # the "\n\n" that joins chapters
    title = metadata_titles[0][0].strip() if metadata_titles and metadata_titles[0][0] else path.stem
    return Document(text="\n\n".join(parts), title=title, source=str(path), sections=sections)


def _toc_titles(toc) -> dict[str, str]:
    """Map each chapter file named in the table of contents to its (first) TOC title."""
    from ebooklib import epub

    titles: dict[str, str] = {}

    def walk(entries) -> None:
        for entry in entries:
            if isinstance(entry, tuple):  # (Section, [children])
                walk([entry[0]])
                walk(entry[1])
            elif isinstance(entry, (epub.Link, epub.Section)) and entry.href and entry.title:
                titles.setdefault(_normpath(entry.href.split("#")[0]), entry.title.strip())

    walk(toc)
    return titles


def _normpath(href: str) -> str:
    return os.path.normpath(href).replace(os.sep, "/")


_BLOCK_TAGS = frozenset(
    ["address", "article", "aside", "blockquote", "body", "dd", "div", "dl", "dt", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul"]
)
_SKIP_TAGS = frozenset({"script", "style", "head"})
_HEADING_TAGS = frozenset({"h1", "h2", "h3"})


class _TextExtractor(HTMLParser):
    """Turn XHTML into paragraphs separated by blank lines, and note the first h1/h2/h3 as the chapter title."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.heading = ""
        self._current: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._heading_parts: list[str] | None = None  # collecting while inside the first heading

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag == "br":
            self._current.append("\n")
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self._pre_depth += 1
            if tag in _HEADING_TAGS and not self.heading and self._heading_parts is None:
                self._heading_parts = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)
            if tag in _HEADING_TAGS and self._heading_parts is not None:
                self.heading = " ".join("".join(self._heading_parts).split())
                self._heading_parts = None

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if not self._pre_depth:
            data = re.sub(r"\s+", " ", data)
        self._current.append(data)
        if self._heading_parts is not None:
            self._heading_parts.append(data)

    def close(self) -> None:
        super().close()
        self._flush()  # text after the last block tag

    def _flush(self) -> None:
        lines = [line.strip() for line in _normalise_newlines("".join(self._current)).split("\n")]
        paragraph = "\n".join(lines).strip("\n")
        if paragraph:
            self.paragraphs.append(paragraph)
        self._current = []


def _xhtml_to_text(markup: str) -> tuple[str, str]:
    """Return (first h1/h2/h3 text, plain text with paragraphs separated by blank lines)."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.heading, "\n\n".join(parser.paragraphs)
