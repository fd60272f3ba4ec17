"""Every task by name (``TASKS``), and seeded datasets of them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from .book_qa import book_cloze, book_facts
from .examples import LongContextExample
from .haystacks import load_haystack
from .needles import niah_multikey, niah_multiquery, niah_multivalue, niah_single, passkey

TASKS: dict[str, Callable[..., LongContextExample]] = {
    "passkey": passkey,
    "niah_single": niah_single,
    "niah_multikey": niah_multikey,
    "niah_multivalue": niah_multivalue,
    "niah_multiquery": niah_multiquery,
    "book_facts": book_facts,
    "book_cloze": book_cloze,
}

# The tasks that place their evidence at one chosen depth of a haystack (``depth=``): the needle sweeps of the
# evaluation (length x depth heatmaps) take their names from here.
NEEDLE_TASKS: dict[str, Callable[..., LongContextExample]] = {name: TASKS[name] for name in ("passkey", "niah_single")}


def derive_seed(seed: int, index: int | str) -> int:
    """The seed of item ``index`` (an example number, a document id) of something seeded ``seed``.

    Stable across runs, Python versions and platforms (SHA-256, not ``hash()``), and unrelated for
    neighbouring indices, so example ``i`` does not depend on how many examples were asked for.
    """
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:8], "big")


def make_dataset(task: str, n: int, seed: int, **kwargs: Any) -> Iterator[LongContextExample]:
    """Yield ``n`` examples of ``task`` with seeds ``derive_seed(seed, i)``; ``kwargs`` go to the generator.

    A ``haystack``/``book`` given as a ``pathlib.Path`` is read once here, not once per example.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if n < 0:
        raise ValueError("n cannot be negative")
    for key in ("haystack", "book"):
        if isinstance(kwargs.get(key), os.PathLike):
            kwargs[key] = load_haystack(kwargs[key])
    generator = TASKS[task]
    for i in range(n):
        yield generator(derive_seed(seed, i), **kwargs)
