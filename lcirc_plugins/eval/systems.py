"""The systems compared side by side, all sharing one loaded ``LCIRCModel``.

The backbone called with no memory is the plain backbone (the GCA hooks are identities without memory),
so the truncated, full-context (plain and RoPE-scaled) and RAG baselines cost no extra weights. Every
system implements :class:`System`: ``nll`` (mean negative log-likelihood per target token given a context,
for perplexity) and ``answer`` (free-text answer to a question about a context, for needle / QA tasks), plus
``flops`` (analytic forward FLOPs for a context of N tokens, see :mod:`.flops`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

from ..errors import LCIRCError
from ..model.lcirc_model import LCIRCModel, PreparedPrompt
from ..model.memory import MemoryRows
from ..model.passages import best_first, bm25_scores
from ..model.prompting import DEFAULT_SYSTEM_PROMPT, build_prompt
from ..model.whole_segments import read_whole
from .flops import AdapterShape, DecoderShape, decoder_flops, flops_full, flops_lcirc, flops_truncated

_MARGIN = 8  # tokens kept free when a decoded context is re-tokenized inside a prompt


class ContextTooLongError(LCIRCError):
    """The system cannot read a context this long (e.g. full attention beyond the backbone's positions)."""


@runtime_checkable
class System(Protocol):
    name: str

    def nll(self, context_ids: Sequence[int], target_ids: Sequence[int]) -> float: ...

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str: ...

    def flops(self, context_tokens: int) -> int: ...


def _ids(x: Sequence[int] | torch.Tensor) -> list[int]:
    return x.flatten().tolist() if isinstance(x, torch.Tensor) else [int(i) for i in x]


class _Base:
    name = "base"

    def __init__(self, model: LCIRCModel, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.system_prompt = system_prompt
        self.shape = DecoderShape.from_hf(model.backbone.config)

    @property
    def window(self) -> int:
        return self.model.config.window

    def _score(self, input_ids: list[int], num_targets: int, memory: MemoryRows | None = None) -> float:
        """Mean NLL of the last ``num_targets`` tokens of ``input_ids``."""
        if num_targets < 1 or len(input_ids) <= num_targets:
            raise ValueError("nll needs at least one context token and one target token")
        ids = torch.tensor([input_ids], dtype=torch.long)
        labels = ids.clone()
        labels[0, : len(input_ids) - num_targets] = -100
        with torch.no_grad():
            out = self.model(ids, memory=memory, labels=labels.to(self.model.device))
        return float(out.loss)

    def _question_prompt(self, context_text: str, question: str) -> list[int]:
        user = f"{context_text}\n\nQuestion: {question}" if context_text else question
        return build_prompt(self.tokenizer, user, self.system_prompt)

    def _context_budget(self, question: str, max_new_tokens: int, limit: int) -> int:
        budget = limit - max_new_tokens - len(self._question_prompt("", question)) - _MARGIN
        if budget < 1:
            raise ContextTooLongError(f"{self.name}: the question and answer alone fill the {limit}-token window")
        return budget

    def _fit_prompt(self, context_ids: list[int], question: str, max_new_tokens: int, limit: int) -> list[int]:
        """The QA prompt with as many of the context's last tokens as fit in ``limit``."""
        keep = min(len(context_ids), self._context_budget(question, max_new_tokens, limit))
        while True:
            text = self.tokenizer.decode(context_ids[len(context_ids) - keep :]) if keep else ""
            prompt = self._question_prompt(text, question)
            if len(prompt) + max_new_tokens <= limit or keep == 0:
                return prompt
            keep = max(0, keep - (len(prompt) + max_new_tokens - limit) - 1)

    def _generate(self, prompt: list[int], max_new_tokens: int, memory: MemoryRows | None = None, compressed: int = 0) -> str:
        prepared = PreparedPrompt(torch.tensor([prompt], dtype=torch.long), memory, compressed)
        return self.model.generate_text(prepared, max_new_tokens=max_new_tokens)[0]

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class TruncatedBackbone(_Base):
    """The backbone on its window only: the last ``M - len(target)`` context tokens (the paper's Llama2 row)."""

    name = "truncated"

    def nll(self, context_ids: Sequence[int], target_ids: Sequence[int]) -> float:
        context, target = _ids(context_ids), _ids(target_ids)
        keep = self.window - len(target)
        return self._score(context[-keep:] + target, len(target))

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str:
        prompt = self._fit_prompt(self._encode(context_text), question, max_new_tokens, self.window)
        return self._generate(prompt, max_new_tokens)

    def flops(self, context_tokens: int) -> int:
        return flops_truncated(self.shape, context_tokens, self.window)


class FullContext(_Base):
    """The backbone attending to the whole context; refuses contexts beyond its maximum positions."""

    name = "full"

    @property
    def max_positions(self) -> int:
        config = self.model.backbone.config
        return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or self.window)

    def _check(self, tokens: int) -> None:
        if tokens > self.max_positions:
            raise ContextTooLongError(f"full: {tokens} tokens exceed the backbone's {self.max_positions} positions")

    def nll(self, context_ids: Sequence[int], target_ids: Sequence[int]) -> float:
        context, target = _ids(context_ids), _ids(target_ids)
        self._check(len(context) + len(target))
        return self._score(context + target, len(target))

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str:
        prompt = self._question_prompt(context_text, question)
        self._check(len(prompt) + max_new_tokens)
        return self._generate(prompt, max_new_tokens)

    def flops(self, context_tokens: int) -> int:
        return flops_full(self.shape, context_tokens)


class ExtendedFA(FullContext):
    """The backbone on the whole context, RoPE-scaled beyond its positions (the paper's ExtendedFA row).

    Within ``max_positions`` it is :class:`FullContext`, unchanged. Beyond, for the duration of the call,
    every rotary embedding's inverse frequencies are divided by ``factor = tokens / max_positions``: linear
    position interpolation, the frequencies transformers builds for ``rope_parameters={"rope_type":
    "linear", "factor": factor}``. Scaling the live buffers rather than rebuilding the rotary modules keeps
    this free of per-family code (Gemma3's per-layer-type buffers included). The backbone is not fine-tuned at
    the longer length. Backbones without rotary embeddings (GPT-2's learned positions) are refused beyond
    their positions. Not thread-safe: the buffers are shared with every system on the same backbone.
    """

    name = "extended-fa"

    def __init__(self, model: LCIRCModel, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, max_tokens: int | None = None) -> None:
        super().__init__(model, system_prompt)
        # Full attention over 128K tokens takes hours on a CPU: a run sets how far it is willing to go.
        self.max_tokens = max_tokens

    def _check_budget(self, tokens: int) -> None:
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise ContextTooLongError(
                f"{self.name}: {tokens} tokens exceed this run's full-attention budget of {self.max_tokens} "
                f"(about {self.flops(tokens):.2e} FLOPs; raise --full-max-tokens to run it)"
            )

    def _rotary_buffers(self) -> list[tuple[torch.nn.Module, str]]:
        """``(module, buffer name)`` of every inverse-frequency buffer (``inv_freq``, ``<layer type>_inv_freq``)."""
        return [
            (module, name)
            for module in self.model.backbone.modules()
            for name, _ in module.named_buffers(recurse=False)
            if name.endswith("inv_freq") and not name.endswith("original_inv_freq")
        ]

    @contextlib.contextmanager
    def rope_scaled(self, tokens: int) -> Iterator[float]:
        """Within the block the backbone reads ``tokens`` positions; yields the scaling factor (1.0 if none)."""
        if tokens <= self.max_positions:
            yield 1.0
            return
        buffers = self._rotary_buffers()
        if not buffers:
            raise ContextTooLongError(
                f"{self.name}: {tokens} tokens exceed the backbone's {self.max_positions} positions and it has no "
                "rotary embedding to interpolate"
            )
        factor = tokens / self.max_positions
        saved = [(module, name, getattr(module, name)) for module, name in buffers]
        try:
            for module, name, inv_freq in saved:
                setattr(module, name, inv_freq / factor)
            yield factor
        finally:
            for module, name, inv_freq in saved:
                setattr(module, name, inv_freq)

    def nll(self, context_ids: Sequence[int], target_ids: Sequence[int]) -> float:
        context, target = _ids(context_ids), _ids(target_ids)
        self._check_budget(len(context) + len(target))
        with self.rope_scaled(len(context) + len(target)):
            return self._score(context + target, len(target))

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str:
        prompt = self._question_prompt(context_text, question)
        self._check_budget(len(prompt) + max_new_tokens)
        with self.rope_scaled(len(prompt) + max_new_tokens):
            return self._generate(prompt, max_new_tokens)


class LCIRCSystem(_Base):
    """LCIRC (or QD-LCIRC when ``config.query_dependent``): the context beyond the window goes to memory.

    As ``LCIRCModel.prepare_prompt``: the head of the token sequence is compressed by the recurrent
    compressor, the tail is read by the decoder. For perplexity the QD query is the last
    ``max_query_tokens`` context tokens in the window (never the target); for QA it is the question.
    """

    def __init__(
        self,
        model: LCIRCModel,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        use_query: bool = True,
        keep_window: bool = True,
    ) -> None:
        super().__init__(model, system_prompt)
        # use_query=False runs a query-dependent adapter as plain LCIRC: the same weights, no question.
        self.use_query = use_query and model.config.query_dependent
        # keep_window=False compresses the whole context and the decoder reads only the question: what
        # LCIRCModel.answer, the app and the retrievers do with a compressed book ("-memory" in the name).
        self.keep_window = keep_window
        self.name = ("qd-lcirc" if self.use_query else "lcirc") + ("" if keep_window else "-memory")
        self.adapter_shape = AdapterShape.from_config(model.config, self.shape.hidden, self.shape.layers)

    def _compress(self, head: list[int], query: list[int]) -> MemoryRows | None:
        if not head:
            return None
        query_ids = torch.tensor(query[-self.model.config.max_query_tokens :], dtype=torch.long) if self.use_query else None
        head_ids = torch.tensor(head, dtype=torch.long)
        if not self.model.adapter.reads_layers or self.model.adapter.compressor.corrected:  # the question enters the build
            return self.model.compress_ids(head_ids, query_ids)
        # The layer reader's segments never see the question (QD is a bias read from each slot's state), so the
        # systems of one model share the last compression: LCIRC and QD-LCIRC on one context cost one build.
        key = (self.model.adapter_fingerprint, head_ids.numpy().tobytes())
        cached = _LAST_MEMORY.get(self.model)
        if cached is None or cached[0] != key:
            cached = (key, self.model.compress_ids(head_ids))
            _LAST_MEMORY[self.model] = cached
        rows = cached[1]
        if query_ids is None or not query_ids.numel():
            return rows
        rows = self._whole_segments(rows, head_ids, self.model.tokenizer.decode(query_ids.tolist()))
        with torch.no_grad():
            bias = self.model.question_bias(rows.features[None, :, 0], query_ids)
        return rows if bias is None else dataclasses.replace(rows, bias=bias[0].float().cpu())

    def _whole_segments(self, rows: MemoryRows, head_ids: torch.Tensor, question: str) -> MemoryRows:
        """``LCIRCModel.for_question`` on rows made for one prompt: the question's segments read whole."""
        whole = read_whole(self.model, head_ids, rows.features, rows.positions + rows.span, question)
        return rows if whole is None else dataclasses.replace(rows, features=whole[0], positions=whole[1] - rows.span, whole=whole[2])

    def nll(self, context_ids: Sequence[int], target_ids: Sequence[int]) -> float:
        context, target = _ids(context_ids), _ids(target_ids)
        # Without the window, the decoder keeps only the context's last token: the target's first one needs it.
        keep = min(len(context), self.window - len(target)) if self.keep_window else 1
        head, tail = context[: len(context) - keep], context[len(context) - keep :]
        memory = self._compress(head, tail)
        return self._score(tail + target, len(target), memory)

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str:
        context = self._encode(context_text)
        keep = min(len(context), self._context_budget(question, max_new_tokens, self.window)) if self.keep_window else 0
        head, tail = context[: len(context) - keep], context[len(context) - keep :]
        memory = self._compress(head, self._encode(question))
        prompt = self._fit_prompt(tail, question, max_new_tokens, self.window)
        return self._generate(prompt, max_new_tokens, memory, len(head))

    def flops(self, context_tokens: int) -> int:
        return flops_lcirc(self.shape, self.adapter_shape, context_tokens, self.window)


# model -> ((adapter fingerprint, context ids), its question-free memory rows): see LCIRCSystem._compress.
_LAST_MEMORY: weakref.WeakKeyDictionary[LCIRCModel, tuple[tuple[str, bytes], MemoryRows]] = weakref.WeakKeyDictionary()


class BM25RAG(_Base):
    """Chunk-and-retrieve: the context is cut into ``chunk_tokens``-token passages, the best by BM25 go
    into the prompt (best first, as many as fit the window, at most ``top_k``), the plain backbone answers."""

    name = "bm25-rag"

    def __init__(
        self,
        model: LCIRCModel,
        chunk_tokens: int | None = None,
        top_k: int = 4,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(model, system_prompt)
        self.chunk_tokens = chunk_tokens or model.config.segment_len
        self.top_k = top_k

    def chunks(self, ids: list[int]) -> list[list[int]]:
        return [ids[i : i + self.chunk_tokens] for i in range(0, len(ids), self.chunk_tokens)]

    def rank(self, chunk_ids: list[list[int]], query: str) -> list[int]:
        """Chunk indices, best BM25 score first (ties keep source order)."""
        texts = [self.tokenizer.decode(c) for c in chunk_ids]
        scores = bm25_scores(query, texts)
        return best_first(scores, self.top_k)

    def retrieve(self, context_text: str, question: str) -> list[str]:
        """The texts of the ``top_k`` passages for ``question``, best first."""
        chunk_ids = self.chunks(self._encode(context_text))
        return [self.tokenizer.decode(chunk_ids[i]) for i in self.rank(chunk_ids, question)]

    def _pack(self, chunk_ids: list[list[int]], order: list[int], budget: int) -> list[int]:
        picked, used = [], 0
        for i in order:
            if used + len(chunk_ids[i]) > budget:
                break
            picked.append(i)
            used += len(chunk_ids[i])
        return picked

    def nll(self, context_ids: Sequence[int], target_ids: Sequence[int]) -> float:
        """Half the window is the context's tail; the rest is filled with passages retrieved for that tail."""
        context, target = _ids(context_ids), _ids(target_ids)
        budget = self.window - len(target)
        tail_len = min(len(context), max(1, budget // 2))
        tail, rest = context[len(context) - tail_len :], context[: len(context) - tail_len]
        chunk_ids = self.chunks(rest)
        picked = (
            sorted(self._pack(chunk_ids, self.rank(chunk_ids, self.tokenizer.decode(tail)), budget - tail_len)) if rest else []
        )
        retrieved = [t for i in picked for t in chunk_ids[i]]
        return self._score(retrieved + tail + target, len(target))

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str:
        chunk_ids = self.chunks(self._encode(context_text))
        budget = self._context_budget(question, max_new_tokens, self.window)
        picked = self._pack(chunk_ids, self.rank(chunk_ids, question), budget - _MARGIN)
        passages = "\n\n".join(self.tokenizer.decode(chunk_ids[i]) for i in picked)
        prompt = self._fit_prompt(self._encode(passages), question, max_new_tokens, self.window)
        return self._generate(prompt, max_new_tokens)

    def flops(self, context_tokens: int) -> int:
        return decoder_flops(self.shape, min(context_tokens, self.window))


SYSTEMS = {
    "truncated": TruncatedBackbone,
    "full": FullContext,
    "extended-fa": ExtendedFA,
    "lcirc": LCIRCSystem,
    "bm25-rag": BM25RAG,
}


def build_systems(
    model: LCIRCModel, names: Sequence[str], qd_model: LCIRCModel | None = None, full_max_tokens: int | None = None
) -> list[System]:
    """Systems by name (``truncated``, ``full``, ``extended-fa``, ``lcirc``, ``qd-lcirc``, ``bm25-rag``) on one model."""
    out: list[System] = []
    for name in names:
        if name == "extended-fa":
            out.append(ExtendedFA(model, max_tokens=full_max_tokens))
        elif name == "qd-lcirc":
            if qd_model is None or not qd_model.config.query_dependent:
                raise LCIRCError("qd-lcirc needs a query-dependent adapter (config.query_dependent=True)")
            out.append(LCIRCSystem(qd_model))
        elif name in SYSTEMS:
            out.append(SYSTEMS[name](model))
        else:
            raise LCIRCError(f"unknown system {name!r}; choose from {sorted([*SYSTEMS, 'qd-lcirc'])}")
    return out


def perplexity(nll: float | None) -> float | None:
    return None if nll is None else math.exp(min(nll, 700.0))
