"""Probe: slots and whole rows in ONE softmax, each kind read through its own reader's deltas (no training).

    .venv/bin/python experiments/joint_softmax_probe.py runs/r4-r5 --task book_facts --tokens 4096 --samples 20

The shipped whole reader (``LCIRCConfig.whole_reader``) gives each kind of row its own softmax and adds the two
gated reads, so the slots' answer is added at full strength whatever the whole rows hold. R5's shared reader read
both kinds in one softmax, where the question's whole rows take attention away from the slots. This patches
``LayerReader.forward`` so that slot rows are scored with the slot reader's query and keys, whole rows with the
whole reader's (QD bias on both, as R5 had), one softmax over all rows, each kind's values and output through its
own reader and gate. With the whole readers a copy of the slot readers it is R5's in-place read exactly.
Arguments after the adapter go to ``product_path_eval.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import product_path_eval
import torch

from lcirc_plugins.model import injection
from lcirc_plugins.model.layer_reader import LayerReader, WholeRows, _logit_mask


@dataclass(frozen=True)
class BiasedWholeRows(WholeRows):
    bias: torch.Tensor | None = None


_split_whole = injection._Conditioning.split_whole
_whole_rows = injection.MemoryInjector._whole_rows
_forward = LayerReader.forward


def split_whole(self, whole):
    bias = self.bias
    _split_whole(self, whole)
    if self.whole is not None:
        self.whole.bias = None if bias is None else injection._gather_rows(bias, self.whole.index)


def whole_rows(self, index, state, query_rotary):
    rows = _whole_rows(self, index, state, query_rotary)
    return None if rows is None else BiasedWholeRows(rows.kv, rows.mask, getattr(state.whole, "bias", None))


def _scores(reader: LayerReader, q, k, mask, bias):
    b, h, t, d = q.shape
    grouped = q.reshape(b, k.shape[1], h // k.shape[1] * t, d)
    scores = (grouped @ k.transpose(-1, -2)).float() * reader.parts.scaling
    logits = _logit_mask(mask, bias, torch.float32)
    return scores if logits is None else scores + logits


def _out(reader: LayerReader, probs, v, shape):
    b, h, t, d = shape
    heads = (probs.to(v.dtype) @ v).view(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)
    return reader.parts.output(heads) + reader._delta("o", heads)


def joint_forward(self, hidden, memory_kv, memory_mask=None, rotary=None, bias=None, whole=None):
    if whole is None:
        return _forward(self, hidden, memory_kv, memory_mask, rotary, bias)
    q_slots, q_whole = self._query(hidden, rotary), self.whole._query(hidden, rotary)
    (k_s, v_s), (k_w, v_w) = memory_kv, whole.kv
    s_slots = _scores(self, q_slots, k_s, memory_mask, bias)
    s_whole = _scores(self.whole, q_whole, k_w, whole.mask, getattr(whole, "bias", None))
    probs = torch.cat([s_slots, s_whole], dim=-1).softmax(dim=-1)
    p_slots, p_whole = probs.split([k_s.shape[2], k_w.shape[2]], dim=-1)
    read_slots = _out(self, p_slots, v_s, q_slots.shape)
    read_whole = _out(self.whole, p_whole, v_w, q_whole.shape)
    return hidden + torch.tanh(self.attn_gate) * read_slots + torch.tanh(self.whole.attn_gate) * read_whole


injection._Conditioning.split_whole = split_whole
injection.MemoryInjector._whole_rows = whole_rows
LayerReader.forward = joint_forward

if __name__ == "__main__":
    product_path_eval.main()
