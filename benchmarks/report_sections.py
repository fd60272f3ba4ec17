"""Named sections of ``benchmarks/RESULTS.md`` that separate scripts measure and rewrite on their own.

A section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; writing one leaves the rest of the
file as it was, and ``results_report.py`` carries every known section over when it rewrites the file.
"""

from __future__ import annotations

from pathlib import Path

SECTIONS = ("startup", "layer-reader-cost")  # the scripts that own them: startup.py, layer_reader_cost.py


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_section(path: Path, name: str) -> str | None:
    """The text between the markers of section ``name`` in ``path``, if it has them."""
    start, end = _markers(name)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start not in current or end not in current:
        return None
    return current.split(start, 1)[1].split(end, 1)[0].strip("\n")


def write_section(text: str, path: Path, name: str) -> None:
    """Replace (or append) section ``name``; nothing else in the file changes."""
    start, end = _markers(name)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{start}\n{text}\n{end}"
    if start in current and end in current:
        head, rest = current.split(start, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current, encoding="utf-8")
