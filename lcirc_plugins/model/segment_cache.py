"""Segments compressed before, by their token ids: text read once is not read again.

The layer reader compresses every segment on its own (one frozen forward, then its most salient tokens), so a
segment's slots depend on its token ids alone and can be reused exactly wherever the same ids recur: an edited
book re-reads only the segments that changed, and an evaluation that hides a pass key at five depths of one
haystack, or in repeated filler, reads each distinct segment once. ``LCIRCModel.reusing_segments`` turns it on
for a block in which the adapter's weights do not change.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch


class SegmentCache:
    """Least-recently-used slots and centres of compressed segments, up to ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"a segment cache needs room: max_bytes must be positive, got {max_bytes}")
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self._entries: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(ids: torch.Tensor) -> bytes:
        ids = ids.detach().to("cpu", torch.int64).contiguous()
        return hashlib.blake2b(str(tuple(ids.shape)).encode() + ids.numpy().tobytes(), digest_size=20).digest()

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(slots, centres) of a segment with these token ids, counted as a hit or a miss."""
        key = self.key(ids)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, ids: torch.Tensor, slots: torch.Tensor, centres: torch.Tensor) -> None:
        key = self.key(ids)
        if key in self._entries:
            return
        entry = (slots.detach().clone(), centres.detach().clone())
        self._entries[key] = entry
        self.bytes += sum(t.numel() * t.element_size() for t in entry)
        while self.bytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in dropped)
