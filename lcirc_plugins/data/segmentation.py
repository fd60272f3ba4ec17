"""Tokenizing very long texts in pieces, keeping each token's character offsets.

A whole book is tokenized in chunks of about ``chunk_chars`` characters so that no huge intermediate
(a Python list of a million offset tuples) is built at once. Chunks are cut just before the last
whitespace character that precedes a word, a point where byte-level BPE pre-tokenizers (GPT-2, Llama-3,
SmolLM2, Qwen) also split, so the ids equal those of tokenizing the whole text in one call.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class TokenizedText:
    """Token ids [N] and each token's character ``[start, end)`` in the text."""

    ids: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.numel())


def chunk_boundaries(text: str, chunk_chars: int) -> list[int]:
    """Start offsets of the chunks: ``[0, p1, p2, ...]`` where ``text[p]`` is whitespace and ``text[p+1]`` is not."""
    bounds = [0]
    target = chunk_chars
    while target < len(text):
        p = target
        while p + 1 < len(text) and not (text[p].isspace() and not text[p + 1].isspace()):
            p += 1
        if p + 1 >= len(text):
            break
        bounds.append(p)
        target = p + chunk_chars
    return bounds


def tokenize_with_offsets(tokenizer: PreTrainedTokenizerBase, text: str, chunk_chars: int = 100_000) -> TokenizedText:
    """Tokenize ``text`` without special tokens, chunk by chunk, with character offsets."""
    bounds = chunk_boundaries(text, chunk_chars) + [len(text)]
    ids, starts, ends = [], [], []
    for begin, end in itertools.pairwise(bounds):
        chunk = text[begin:end]
        if getattr(tokenizer, "is_fast", False):
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            offsets = torch.tensor(enc["offset_mapping"], dtype=torch.int64).reshape(-1, 2)
            chunk_starts, chunk_ends = offsets[:, 0] + begin, offsets[:, 1] + begin
        else:  # slow tokenizers have no offsets: spread the chunk evenly (approximate provenance)
            enc = tokenizer(chunk, add_special_tokens=False)
            n = max(1, len(enc["input_ids"]))
            edges = torch.linspace(begin, end, n + 1).round().long()
            chunk_starts, chunk_ends = edges[:-1], edges[1:]
        ids.append(torch.tensor(enc["input_ids"], dtype=torch.int64))
        starts.append(chunk_starts[: len(enc["input_ids"])])
        ends.append(chunk_ends[: len(enc["input_ids"])])
    return TokenizedText(torch.cat(ids), torch.cat(starts), torch.cat(ends))


def segment_spans(starts: torch.Tensor, ends: torch.Tensor, segment_len: int) -> torch.Tensor:
    """Character ``[start, end)`` of each ``segment_len``-token segment: [S, 2]."""
    first = starts[::segment_len]
    last = ends[segment_len - 1 :: segment_len]
    if len(last) < len(first):  # short last segment
        last = torch.cat([last, ends[-1:]])
    return torch.stack([first, last], dim=1)
