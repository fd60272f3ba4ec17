"""Tests for lcirc_plugins.data.documents: real files written to tmp_path, no mocks."""

from __future__ import annotations

import random
import sys
import zipfile

import pytest
from document_files import make_epub, make_pdf
from support import FIXTURES

from lcirc_plugins.data import Document, read_document, read_text_bytes, validate_text
from lcirc_plugins.errors import (
    BinaryInputError,
    CorruptFileError,
    EmptyInputError,
    InputTooLargeError,
    LCIRCError,
    MissingDependencyError,
    UnsupportedFormatError,
)

DATA_DIR = FIXTURES


# ---------------------------------------------------------------------------------------------------------
# Plain text
# ---------------------------------------------------------------------------------------------------------


def test_txt_with_bom_and_crlf_is_decoded_and_normalised(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes("\ufeffChapter 1\r\nIt was a dark night.\r\n\r\nOld line\rend.".encode())

    doc = read_document(path)

    assert doc.text == "Chapter 1\nIt was a dark night.\n\nOld line\nend."
    assert doc.title == "book"
    assert doc.source == str(path)
    assert doc.sections == [("Chapter 1", 0)]  # found by the same detector the app uses, after the BOM is gone


def test_markdown_and_rst_extensions_are_read_as_text(tmp_path):
    for name in ("notes.md", "notes.markdown", "notes.rst", "NOTES.TXT", "notes.text"):
        path = tmp_path / name
        path.write_text("# Heading\n\nBody text.\n", encoding="utf-8")
        assert read_document(path).text == "# Heading\n\nBody text.\n"


def test_sample_book_excerpt_reads_without_bom():
    path = DATA_DIR / "sample-book.txt"
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the fixture really has a BOM

    doc = read_document(str(path))

    assert isinstance(doc, Document)
    assert doc.text.startswith("The Project Gutenberg EBook of Treasure Island, by Robert Louis Stevenson\n")
    assert "\ufeff" not in doc.text
    assert "THE OLD SEA-DOG AT THE ADMIRAL BENBOW" in doc.text
    assert doc.text.endswith("the frosty fog.\n")
    assert len(doc.text) == len(raw.decode("utf-8")) - 1  # only the BOM was removed


def test_empty_file_raises_empty_input_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(EmptyInputError, match="no text to compress"):
        read_document(path)


def test_whitespace_only_file_raises_empty_input_error(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_bytes(b"\xef\xbb\xbf  \r\n\t\n   \n")
    with pytest.raises(EmptyInputError, match="blank.txt"):
        read_document(path)


def test_binary_file_with_txt_extension_raises_binary_input_error(tmp_path):
    rng = random.Random(0)
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(rng.randrange(256) for _ in range(2000))
    path = tmp_path / "image.txt"
    path.write_bytes(png)

    with pytest.raises(BinaryInputError, match="does not look like text") as info:
        read_document(path)
    assert "image.txt" in str(info.value)


def test_upload_of_valid_utf8_with_nul_characters_is_rejected():
    data = "hello world".encode("utf-16-le")  # decodes as UTF-8, but every other character is NUL
    with pytest.raises(BinaryInputError, match="notes.txt does not look like text: it contains NUL"):
        read_text_bytes(data, name="notes.txt")


def test_empty_upload_raises_empty_input_error():
    with pytest.raises(EmptyInputError, match="upload is empty"):
        read_text_bytes(b"\xef\xbb\xbf\r\n")


def test_cp1252_text_is_decoded_when_not_utf8():
    data = "Caf\u00e9 \u2013 na\u00efve \u201cquotes\u201d \u20ac5\r\n".encode("cp1252")
    assert read_text_bytes(data) == "Caf\u00e9 \u2013 na\u00efve \u201cquotes\u201d \u20ac5\n"


def test_non_utf8_bytes_undefined_in_cp1252_are_binary():
    with pytest.raises(BinaryInputError, match="upload does not look like text"):
        read_text_bytes(b"some text \x81\x8d\x8f\x90\x9d more")


def test_non_utf8_bytes_mostly_control_characters_are_binary():
    data = b"\xff" + bytes(range(1, 9)) * 20  # not UTF-8, no NUL, but mostly control characters
    with pytest.raises(BinaryInputError, match="does not look like text"):
        read_text_bytes(data, name="blob.bin")


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(b"PK\x03\x04 whatever")
    with pytest.raises(UnsupportedFormatError, match=r"unsupported file type '\.docx'") as info:
        read_document(path)
    for ext in (".txt", ".md", ".pdf", ".epub"):
        assert ext in str(info.value)


def test_file_over_max_bytes_raises_before_reading(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 2_500_000, encoding="utf-8")

    with pytest.raises(InputTooLargeError) as info:
        read_document(path, max_bytes=1_000_000)
    message = str(info.value)
    assert "2.5 MB" in message and "1.0 MB" in message
    assert read_document(path, max_bytes=None).text == "x" * 2_500_000
    assert read_document(path, max_bytes=2_500_000).text == "x" * 2_500_000


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_document(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------------------------
# validate_text
# ---------------------------------------------------------------------------------------------------------


def test_validate_text_returns_normal_text_unchanged():
    text = "Line one\n\tindented\fnext page\r\n"
    assert validate_text(text) is text


def test_validate_text_rejects_empty_and_whitespace():
    for text in ("", "   \n\t "):
        with pytest.raises(EmptyInputError, match="question"):
            validate_text(text, source="question")


def test_validate_text_rejects_nul():
    with pytest.raises(BinaryInputError, match="does not look like text"):
        validate_text("abc\x00def")


def test_validate_text_control_character_threshold_is_ten_percent():
    ok = "a" * 90 + "\x07" * 10  # exactly 10%: allowed
    assert validate_text(ok) == ok
    with pytest.raises(BinaryInputError, match="control characters"):
        validate_text("a" * 89 + "\x07" * 11)


def test_validate_text_only_samples_first_100k_characters():
    text = "a" * 100_000 + "\x07" * 50_000  # controls only after the sample
    assert validate_text(text) is text


def test_errors_are_lcirc_errors_and_value_errors():
    with pytest.raises(LCIRCError):
        validate_text("")
    with pytest.raises(ValueError):
        validate_text("")


# ---------------------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------------------


def test_pdf_text_is_extracted_page_by_page(tmp_path):
    path = tmp_path / "paper.pdf"
    path.write_bytes(make_pdf([["First page line one", "First page line two"], ["Second page (with parens)"]]))

    doc = read_document(path)

    assert "First page line one" in doc.text
    assert "Second page (with parens)" in doc.text
    first_end = doc.text.index("First page line two") + len("First page line two")
    assert doc.text.index("\n\nSecond page") == first_end  # pages joined by a blank line, in order
    assert doc.title == "paper"


def test_pdf_without_text_raises_empty_input_error_mentioning_scans(tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(make_pdf([[], []]))
    with pytest.raises(EmptyInputError, match="scanned images"):
        read_document(path)


def test_truncated_pdf_raises_corrupt_file_error(tmp_path):
    path = tmp_path / "broken.pdf"
    data = make_pdf([["Some text"], ["More text"]])
    path.write_bytes(data[: len(data) // 2])  # cut off mid-file, like an interrupted download
    with pytest.raises(CorruptFileError, match="broken.pdf"):
        read_document(path)


def test_password_protected_pdf_raises_corrupt_file_error(tmp_path):
    from pypdf import PdfReader, PdfWriter

    plain = tmp_path / "plain.pdf"
    plain.write_bytes(make_pdf([["Secret text"]]))
    writer = PdfWriter()
    writer.append(PdfReader(plain))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="RC4-128")
    path = tmp_path / "locked.pdf"
    with path.open("wb") as fh:
        writer.write(fh)

    with pytest.raises(CorruptFileError, match=r"encrypted \(password-protected\) PDF"):
        read_document(path)


def test_missing_pypdf_raises_missing_dependency_error_with_install_hint(tmp_path, monkeypatch):
    path = tmp_path / "paper.pdf"
    path.write_bytes(make_pdf([["Text"]]))
    monkeypatch.setitem(sys.modules, "pypdf", None)  # makes `import pypdf` fail like an uninstalled package

    with pytest.raises(MissingDependencyError, match=r"pip install 'lcirc-plugins\[docs\]'"):
        read_document(path)


# ---------------------------------------------------------------------------------------------------------
# EPUB
# ---------------------------------------------------------------------------------------------------------


def test_epub_chapters_in_spine_order_with_sections_and_no_nav_text(tmp_path):
    path = make_epub(
        tmp_path / "book.epub",
        [
            (
                "z_first.xhtml",
                "Head Title One",
                "Toc Entry One",
                ("<h1>The Old Sea-dog</h1><p>Squire Trelawney asked me.</p>"
                "<p>I take up my <em>pen</em> &amp; go<br/>back.</p><script>var hidden = 1;</script>"),
            ),
            (
                "a_second.xhtml",
                "Head Title Two",
                "Toc Entry Two",
                "<style>p { color: red }</style><h1>Black Dog</h1><p>It was not long after.</p>",
            ),
        ],
    )

    doc = read_document(path)

    assert doc.text == (
        "The Old Sea-dog\n\nSquire Trelawney asked me.\n\nI take up my pen & go\nback."
        "\n\nBlack Dog\n\nIt was not long after."
    )
    assert doc.sections == [("The Old Sea-dog", 0), ("Black Dog", doc.text.index("Black Dog"))]
    for title, offset in doc.sections:
        assert doc.text[offset:].startswith(title)
    for not_wanted in ("Toc Entry", "Head Title", "hidden", "color"):
        assert not_wanted not in doc.text
    assert doc.title == "A Test Book"
    assert doc.source == str(path)


def test_epub_chapter_without_heading_uses_toc_title(tmp_path):
    path = make_epub(
        tmp_path / "book.epub",
        [
            ("one.xhtml", "Head One", "Prologue", "<p>No heading here.</p>"),
            ("two.xhtml", "Head Two", "Toc Two", "<h2>Real Heading</h2><p>Body.</p>"),
        ],
    )

    doc = read_document(path)

    assert doc.sections == [("Prologue", 0), ("Real Heading", doc.text.index("Real Heading"))]


def test_missing_ebooklib_raises_missing_dependency_error_with_install_hint(tmp_path, monkeypatch):
    path = make_epub(tmp_path / "book.epub", [("one.xhtml", "Head", "Toc", "<h1>One</h1><p>Text.</p>")])
    monkeypatch.setitem(sys.modules, "ebooklib", None)  # makes `import ebooklib` fail like an uninstalled package

    with pytest.raises(MissingDependencyError, match=r"ebooklib: pip install 'lcirc-plugins\[docs\]'"):
        read_document(path)


def test_corrupt_epub_raises_corrupt_file_error(tmp_path):
    path = tmp_path / "broken.epub"
    path.write_bytes(b"PK\x03\x04" + bytes(random.Random(1).randrange(256) for _ in range(500)))
    with pytest.raises(CorruptFileError, match="broken.epub"):
        read_document(path)


def test_zip_without_epub_container_raises_corrupt_file_error(tmp_path):
    path = tmp_path / "notabook.epub"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "just a zip")
    with pytest.raises(CorruptFileError, match="notabook.epub"):
        read_document(path)
