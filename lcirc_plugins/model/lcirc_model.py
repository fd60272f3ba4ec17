"""``LCIRCModel``: a frozen causal LM plus an LCIRC adapter, with compress / answer / train entry points."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from ..data.documents import check_unicode
from ..data.segmentation import segment_spans, tokenize_with_offsets
from ..errors import AdapterNotFoundError, EmptyInputError, InputTooLongError, LCIRCError
from .adapter import LCIRCAdapter, check_signature, load_adapter_weights, save_adapter
from .backbone import DEFAULT_BACKBONE, backbone_signature, load_backbone, prepare_backbone
from .config import LCIRCConfig
from .injection import MemoryInjector, find_decoder_layers
from .memory import CompressedMemory
from .prompting import DEFAULT_SYSTEM_PROMPT, apply_chat_template, build_prompt

DEFAULT_ADAPTER_DIR = Path(__file__).resolve().parent.parent / "adapters" / "default"
Progress = bool | Callable[[int, int], None]
MemoryLike = CompressedMemory | torch.Tensor | Sequence[CompressedMemory] | None


class LCIRCModel(nn.Module):
    """A frozen decoder-only LM that reads long texts through recurrently compressed memory.

    Args:
        backbone: any Hugging Face causal LM; it is frozen here.
        tokenizer: its tokenizer.
        config: the adapter configuration; ``gca_layers`` is resolved for this backbone.
        backbone_name: how to load the backbone again (recorded in saved adapters).
        adapter_dtype: dtype of the trainable weights (float32 by default, whatever the backbone's).
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: LCIRCConfig | None = None,
        *,
        backbone_name: str | None = None,
        adapter_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        config = config or LCIRCConfig()
        self.backbone = prepare_backbone(backbone)
        self.tokenizer = tokenizer
        layers = find_decoder_layers(backbone, config.decoder_layers_path)
        config.gca_layers = config.resolve_gca_layers(len(layers))
        self.config = config
        self.backbone_name = backbone_name or str(getattr(backbone.config, "_name_or_path", ""))
        dim = backbone.get_input_embeddings().weight.shape[1]
        device = backbone.get_input_embeddings().weight.device
        self.adapter = LCIRCAdapter(dim, config.gca_layers, config).to(device=device, dtype=adapter_dtype)
        self.injector = MemoryInjector(layers, self.adapter.blocks())
        self.signature = {**backbone_signature(backbone, tokenizer), "name_or_path": self.backbone_name}

    # ----- construction and checkpoints -------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        backbone: str | PreTrainedModel = DEFAULT_BACKBONE,
        config: LCIRCConfig | None = None,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: torch.dtype = torch.float32,
        trust_remote_code: bool = False,
    ) -> LCIRCModel:
        """A fresh, untrained adapter (gates closed: outputs equal the backbone's) on ``backbone``."""
        name = backbone if isinstance(backbone, str) else None
        if isinstance(backbone, str):
            backbone, tokenizer = load_backbone(backbone, dtype=dtype, trust_remote_code=trust_remote_code)
        elif tokenizer is None:
            raise LCIRCError("pass tokenizer= together with a ready backbone model")
        return cls(backbone, tokenizer, config, backbone_name=name)

    @classmethod
    def from_pretrained(
        cls,
        adapter: str | Path = "default",
        backbone: str | PreTrainedModel | None = None,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        is_trainable: bool = False,
        dtype: torch.dtype = torch.float32,
        trust_remote_code: bool = False,
    ) -> LCIRCModel:
        """Load a saved adapter (``"default"`` is the one shipped in the package) onto its backbone.

        The backbone defaults to the one recorded in ``adapter_config.json``. The adapter's backbone
        signature is checked before any weight is read (``AdapterMismatchError``).
        """
        directory = DEFAULT_ADAPTER_DIR if str(adapter) == "default" else Path(adapter).expanduser()
        if not directory.is_dir():
            hint = " (no default adapter is shipped in this installation)" if str(adapter) == "default" else ""
            raise AdapterNotFoundError(f"adapter directory {directory} does not exist{hint}")
        config, raw = LCIRCConfig.load(directory)
        saved_signature = raw.get("backbone") or {}
        if backbone is None:
            backbone = saved_signature.get("name_or_path") or DEFAULT_BACKBONE
        if isinstance(backbone, str):
            model_name = backbone
            backbone, tokenizer = load_backbone(backbone, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            model_name = None
            if tokenizer is None:
                raise LCIRCError("pass tokenizer= together with a ready backbone model")
        check_signature(saved_signature, backbone_signature(backbone, tokenizer), str(directory))
        model = cls(backbone, tokenizer, config, backbone_name=model_name)
        try:
            load_adapter_weights(model.adapter, directory)
        except Exception:
            model.injector.detach()  # a failed load must not leave hooks on the caller's backbone
            raise
        model.adapter.train(is_trainable).requires_grad_(is_trainable)
        return model

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (adapter weights only)."""
        return save_adapter(self.adapter, self.config, self.signature, directory, dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.adapter.parameters() if p.requires_grad]

    @property
    def adapter_fingerprint(self) -> str:
        return self.adapter.fingerprint()

    @property
    def device(self) -> torch.device:
        return self.backbone.get_input_embeddings().weight.device

    def train(self, mode: bool = True) -> LCIRCModel:
        """Only the adapter ever trains; the backbone stays in eval mode (no dropout)."""
        self.training = mode
        self.adapter.train(mode)
        self.backbone.eval()
        return self

    # ----- compression ------------------------------------------------------------------------------

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Frozen input embeddings of token ids, in the adapter's dtype (segment features, no LM pass)."""
        with torch.no_grad():
            embeds = self.backbone.get_input_embeddings()(ids.to(self.device))
        return embeds.to(self.adapter.compressor.initial_latents.dtype)

    def compress(
        self,
        text: str,
        memory: CompressedMemory | None = None,
        *,
        progress: Progress = False,
        metadata: dict[str, Any] | None = None,
    ) -> CompressedMemory:
        """Compress ``text`` into memory; with ``memory``, append: the recurrence goes on from its state.

        Appended text counts as following the earlier text directly, so spans are offsets in the
        concatenation. A short last segment is recompressed together with the new tokens, so compressing
        in two calls equals compressing in one.
        """
        return self.compress_many([text], [memory], progress=progress, metadata=[metadata])[0]

    def compress_many(
        self,
        texts: Sequence[str],
        memories: Sequence[CompressedMemory | None] | None = None,
        *,
        progress: Progress = False,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[CompressedMemory]:
        """Compress several texts in one batched recurrence (shorter texts drop out as they end)."""
        from ..data.documents import validate_text

        memories = list(memories) if memories is not None else [None] * len(texts)
        metadata = list(metadata) if metadata is not None else [None] * len(texts)
        L, K = self.config.segment_len, self.config.num_latents
        jobs = []
        for text, memory in zip(texts, memories):
            validate_text(text)
            tokens = tokenize_with_offsets(self.tokenizer, text)
            if len(tokens) == 0:
                raise EmptyInputError("the text has no tokens to compress")
            if memory is None:
                jobs.append(
                    {
                        "ids": tokens.ids,
                        "starts": tokens.starts,
                        "ends": tokens.ends,
                        "kept": 0,
                        "state": None,
                        "base": None,
                        "chars": len(text),
                    }
                )
                continue
            memory.check_compatible(self.adapter_fingerprint, self.signature)
            full = memory.num_tokens // memory.segment_len
            if memory.segment_len != L:
                raise LCIRCError(f"memory was made with segment_len={memory.segment_len}, the model uses {L}")
            tail = memory.token_ids[full * L :].long()
            tail_start, tail_end = memory.spans[full].tolist() if len(tail) else (0, 0)
            state = memory.features[(full - 1) * K : full * K] if full else None
            jobs.append(
                {
                    "ids": torch.cat([tail, tokens.ids]),
                    "starts": torch.cat([torch.full((len(tail),), tail_start), tokens.starts + memory.num_chars]),
                    "ends": torch.cat([torch.full((len(tail),), tail_end), tokens.ends + memory.num_chars]),
                    "kept": full,
                    "state": state,
                    "base": memory,
                    "chars": memory.num_chars + len(text),
                }
            )
        initial = self.adapter.compressor.initial_latents.detach()
        states = torch.stack([(j["state"] if j["state"] is not None else initial).to(initial) for j in jobs])
        total = sum(len(j["ids"]) for j in jobs)
        with _progress_bar(progress, total, "Compressing") as advance, torch.no_grad():
            features = self.adapter.compressor.compress(
                self.embed_tokens, [j["ids"] for j in jobs], L, states=states, on_segment=advance
            )
        results = []
        for job, new, meta in zip(jobs, features, metadata):
            base: CompressedMemory | None = job["base"]
            kept = job["kept"]
            spans = segment_spans(job["starts"], job["ends"], L)
            if base is not None:
                new = torch.cat([base.features[: kept * K].to(new), new])
                spans = torch.cat([base.spans[:kept], spans])
                ids = torch.cat([base.token_ids[: kept * L].long(), job["ids"]])
                meta = {**base.metadata, **(meta or {})}
            else:
                ids = job["ids"]
            results.append(
                CompressedMemory(
                    features=new.float().cpu(),
                    token_ids=ids.to(torch.int32),
                    spans=spans,
                    num_chars=job["chars"],
                    segment_len=L,
                    num_latents=K,
                    adapter_fingerprint=self.adapter_fingerprint,
                    backbone=dict(self.signature),
                    metadata=dict(meta or {}),
                )
            )
        return results

    def query_ids(self, question: str) -> torch.Tensor:
        """The question's token ids that condition QD compression (its first ``max_query_tokens``)."""
        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"][: self.config.max_query_tokens]
        return torch.tensor(ids, dtype=torch.long)

    def memory_for_query(self, memory: CompressedMemory, question: str | None, *, progress: Progress = False) -> torch.Tensor:
        """The features the decoder should read for ``question``: QD recompression when configured."""
        memory.check_compatible(self.adapter_fingerprint, self.signature)
        if not (self.config.query_dependent and question):
            return memory.features
        query = self.query_ids(question)
        if len(query) == 0:
            return memory.features
        compressor = self.adapter.compressor
        with torch.no_grad(), _progress_bar(progress, memory.num_tokens, "Reading for the question") as advance:
            kv = compressor.project_query(self.embed_tokens(query[None]))
            return compressor.compress(
                self.embed_tokens, [memory.token_ids.long()], memory.segment_len, query_kv=kv, on_segment=advance
            )[0]

    def memory_states(self, memory: MemoryLike) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the GCA blocks attend to: features plus the order signal, [B, N, d], and a padding mask."""
        if memory is None:
            return None, None
        if isinstance(memory, CompressedMemory):
            memory.check_compatible(self.adapter_fingerprint, self.signature)
            memory = memory.features
        if isinstance(memory, torch.Tensor):
            features = memory.to(self.device, self.adapter.compressor.initial_latents.dtype)
            return self.adapter.compressor.memory_states(features if features.dim() == 3 else features[None]), None
        rows = [m.features if isinstance(m, CompressedMemory) else m for m in memory]
        for m in memory:
            if isinstance(m, CompressedMemory):
                m.check_compatible(self.adapter_fingerprint, self.signature)
        longest = max(len(r) for r in rows)
        dim = rows[0].shape[-1]
        features = torch.zeros(len(rows), longest, dim, device=self.device)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=self.device)
        for i, r in enumerate(rows):
            features[i, : len(r)] = r.to(features)
            mask[i, : len(r)] = True
        return self.adapter.compressor.memory_states(features), mask

    # ----- decoding ---------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, memory: MemoryLike = None, **kwargs: Any) -> Any:
        """The backbone's forward (``labels=`` gives ``out.loss``) with the memory injected."""
        states, mask = self.memory_states(memory)
        with self.injector.conditioned(states, mask):
            return self.backbone(input_ids=input_ids.to(self.device), **kwargs)

    def generate(self, input_ids: torch.Tensor, memory: MemoryLike = None, **kwargs: Any) -> torch.Tensor:
        """``backbone.generate`` with a memory that stays fixed for the whole call (KV cache stays valid)."""
        states, mask = self.memory_states(memory)
        kwargs.setdefault(
            "pad_token_id",
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
        )
        with self.injector.conditioned(states, mask):
            return self.backbone.generate(input_ids=input_ids.to(self.device), **kwargs)

    def prompt_ids(
        self,
        question: str,
        max_new_tokens: int,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        history: list[dict[str, str]] | None = None,
    ) -> torch.Tensor:
        """The chat prompt for ``question`` as [1, T] ids; refuses prompts that do not fit the window.

        Earlier chat turns in ``history`` are kept newest first, as many whole user/assistant pairs as fit.
        """
        if not question or not question.strip():
            raise EmptyInputError("the question is empty")
        turns = list(history or [])
        for text in (question, system_prompt, *(turn.get("content") for turn in turns)):
            if isinstance(text, str):
                check_unicode(text, source="the question")
        ids = build_prompt(self.tokenizer, question, system_prompt, turns)
        while turns and len(ids) + max_new_tokens > self.config.window:
            turns = turns[2:]  # drop the oldest question and its answer
            ids = build_prompt(self.tokenizer, question, system_prompt, turns)
        if len(ids) + max_new_tokens > self.config.window:
            raise InputTooLongError(
                f"the question takes {len(ids)} tokens and the answer up to {max_new_tokens}, more than the "
                f"decoder window of {self.config.window} tokens; shorten the question or put long text in the memory"
            )
        return torch.tensor([ids], dtype=torch.long)

    def _answer_inputs(
        self, question: str, memory: CompressedMemory | None, max_new_tokens: int, system_prompt: str | None
    ) -> PreparedPrompt:
        ids = self.prompt_ids(question, max_new_tokens, system_prompt)
        features = None if memory is None else self.memory_for_query(memory, question)
        return PreparedPrompt(ids, features, 0 if memory is None else memory.num_tokens)

    def answer(
        self,
        question: str,
        memory: CompressedMemory | None = None,
        *,
        max_new_tokens: int = 128,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        **generate_kwargs: Any,
    ) -> str:
        """Answer ``question`` about the compressed text (greedy unless sampling arguments are given)."""
        prepared = self._answer_inputs(question, memory, max_new_tokens, system_prompt)
        return self.generate_text(prepared, max_new_tokens=max_new_tokens, **generate_kwargs)[0]

    def stream_answer(
        self,
        question: str,
        memory: CompressedMemory | None = None,
        *,
        max_new_tokens: int = 128,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the answer in pieces as it is generated."""
        prepared = self._answer_inputs(question, memory, max_new_tokens, system_prompt)
        return self.stream_text(prepared, max_new_tokens=max_new_tokens, **generate_kwargs)

    # ----- arbitrary prompts: what framework integrations call ------------------------------------------

    def prepare_prompt(self, prompt: str | Sequence[dict[str, str]], *, max_new_tokens: int = 128) -> PreparedPrompt:
        """Tokenize a prompt (text, or chat messages for the chat template) and fit it to the window.

        A prompt longer than ``window - max_new_tokens`` is not cut: its head is compressed into memory
        (query-dependent on the prompt's last tokens in QD mode) and only the tail goes to the decoder.
        """
        if isinstance(prompt, str):
            if not prompt.strip():
                raise EmptyInputError("the prompt is empty")
            ids = self.tokenizer(check_unicode(prompt, source="the prompt"), add_special_tokens=True)["input_ids"]
        else:
            if not prompt:
                raise EmptyInputError("the chat has no messages")
            for message in prompt:
                if isinstance(message.get("content"), str):
                    check_unicode(message["content"], source="a chat message")
            ids = apply_chat_template(self.tokenizer, list(prompt))
        budget = self.config.window - max_new_tokens
        if budget < 1:
            raise InputTooLongError(
                f"max_new_tokens={max_new_tokens} leaves no room in the decoder window of {self.config.window} tokens"
            )
        if len(ids) <= budget:
            return PreparedPrompt(torch.tensor([ids]), None, 0)
        head, tail = torch.tensor(ids[:-budget]), torch.tensor(ids[-budget:])
        compressor = self.adapter.compressor
        with torch.no_grad():
            query = tail[-self.config.max_query_tokens :][None]
            kv = compressor.project_query(self.embed_tokens(query)) if self.config.query_dependent else None
            features = compressor.compress(self.embed_tokens, [head], self.config.segment_len, query_kv=kv)[0]
        return PreparedPrompt(tail[None], features, len(head))

    def generate_text(self, prepared: PreparedPrompt, *, max_new_tokens: int = 128, **generate_kwargs: Any) -> tuple[str, int]:
        """Generate from a prepared prompt; returns the text and the number of new tokens."""
        generate_kwargs.setdefault("do_sample", False)
        out = self.generate(prepared.input_ids, memory=prepared.memory, max_new_tokens=max_new_tokens, **generate_kwargs)
        new_tokens = out[0, prepared.input_ids.shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(), int(new_tokens.numel())

    def stream_text(self, prepared: PreparedPrompt, *, max_new_tokens: int = 128, **generate_kwargs: Any) -> Iterator[str]:
        """Yield generated text in pieces; generation runs in a worker thread."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generate_kwargs.setdefault("do_sample", False)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self.generate(
                    prepared.input_ids,
                    memory=prepared.memory,
                    max_new_tokens=max_new_tokens,
                    streamer=streamer,
                    **generate_kwargs,
                )
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
                errors.append(err)
                streamer.end()

        # A plain Thread does not inherit ContextVars; copy the context so the worker sees the same state.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        worker.start()
        yield from (piece for piece in streamer if piece)
        worker.join()
        if errors:
            raise errors[0]


@dataclass
class PreparedPrompt:
    """Decoder input ids [1, T], the memory features for them (or None) and how many tokens were compressed."""

    input_ids: torch.Tensor
    memory: torch.Tensor | None
    compressed_tokens: int

    @property
    def input_tokens(self) -> int:
        return int(self.input_ids.shape[1]) + self.compressed_tokens


class _progress_bar:
    """tqdm for the CLI (``progress=True``) or a ``callback(done, total)`` for apps; a no-op otherwise."""

    def __init__(self, progress: Progress, total: int, description: str) -> None:
        self.progress, self.total, self.description, self.done = progress, total, description, 0
        self.bar = tqdm(total=total, unit="tok", unit_scale=True, desc=description) if progress is True else None

    def __enter__(self) -> Callable[[int], None]:
        return self.advance

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif callable(self.progress):
            self.progress(self.done, self.total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
