"""``LCIRCModel``: a frozen causal LM plus an LCIRC adapter, with compress / answer / train entry points."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.documents import check_unicode
from ..data.segmentation import segment_spans, tokenize_with_offsets
from ..errors import AdapterNotFoundError, EmptyInputError, InputTooLongError, LCIRCError
from .adapter import LCIRCAdapter, check_signature, load_adapter_weights, save_adapter
from .backbone import DEFAULT_BACKBONE, backbone_signature, load_backbone, prepare_backbone
from .config import LCIRCConfig
from .injection import MemoryInjector, find_decoder_layers, memory_rotary
from .layer_memory import slots_in
from .layer_reader import fold_positions, whole_before_prompt
from .memory import CompressedMemory, MemoryRows
from .prompting import DEFAULT_SYSTEM_PROMPT, apply_chat_template, build_prompt
from .provenance import Provenance, answer_provenance
from .segment_cache import SegmentCache
from .streaming import GenerationStream
from .whole_segments import read_whole, relevant_segments_of_texts

DEFAULT_ADAPTER_DIR = Path(__file__).resolve().parent.parent / "adapters" / "default"
Progress = bool | Callable[[int, int], None]
MemoryLike = CompressedMemory | MemoryRows | torch.Tensor | Sequence[CompressedMemory | MemoryRows] | None


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
        config.salience_layer = config.resolve_salience_layer(len(layers))
        config.position_horizon = config.resolve_position_horizon(getattr(backbone.config, "max_position_embeddings", None))
        self.config = config
        self.backbone_name = backbone_name or str(getattr(backbone.config, "_name_or_path", ""))
        dim = backbone.get_input_embeddings().weight.shape[1]
        device = backbone.get_input_embeddings().weight.device
        self.adapter = LCIRCAdapter(dim, config.gca_layers, config, layers).to(device=device, dtype=adapter_dtype)
        rotary = memory_rotary(backbone, layers) if self.adapter.reads_layers else None
        self.injector = MemoryInjector(layers, self.adapter.blocks(), rotary)
        self.signature = {**backbone_signature(backbone, tokenizer), "name_or_path": self.backbone_name}
        self._segment_cache: SegmentCache | None = None

    @contextlib.contextmanager
    def reusing_segments(self, max_mb: int = 1024) -> Iterator[SegmentCache]:
        """Within the block, a segment whose token ids were compressed before is not read again.

        Exact for the layer reader with slot selection (each segment is compressed on its own, so its slots
        depend on its ids alone); other compressors read as usual. For evaluations and batch jobs over
        overlapping texts (one haystack with a needle at several depths, an edited book). The adapter's
        weights must not change inside the block; the cache (hits, misses) is dropped when it ends.
        """
        if self._segment_cache is not None:
            raise LCIRCError("reusing_segments blocks do not nest: one is already open on this model")
        self._segment_cache = SegmentCache(max_mb * 2**20)
        try:
            yield self._segment_cache
        finally:
            self._segment_cache = None

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
        config_overrides: dict[str, Any] | None = None,
    ) -> LCIRCModel:
        """Load a saved adapter (``"default"`` is the one shipped in the package) onto its backbone.

        The backbone defaults to the one recorded in ``adapter_config.json``. The adapter's backbone
        signature is checked before any weight is read (``AdapterMismatchError``). ``config_overrides``
        changes config fields before the weights load: modules they add start at their initialisation (how a
        training stage grows an adapter, e.g. ``{"query_dependent": True}`` on an LCIRC adapter).
        """
        directory = DEFAULT_ADAPTER_DIR if str(adapter) == "default" else Path(adapter).expanduser()
        if not directory.is_dir():
            hint = " (no default adapter is shipped in this installation)" if str(adapter) == "default" else ""
            raise AdapterNotFoundError(f"adapter directory {directory} does not exist{hint}")
        config, raw = LCIRCConfig.load(directory)
        if config_overrides:
            config = LCIRCConfig.from_dict({**config.to_dict(), **config_overrides}, source=f"overrides of {directory}")
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
            load_adapter_weights(model.adapter, directory, allow_missing=bool(config_overrides))
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

    @property
    def slots_per_segment(self) -> int:
        """Memory rows one full segment becomes (K): latents (paper reader) or pooled windows (layer reader)."""
        if self.adapter.reads_layers:
            return -(-self.config.segment_len // self.config.tokens_per_slot)
        return self.config.num_latents

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Frozen input embeddings of token ids, in the adapter's dtype (segment features, no LM pass)."""
        with torch.no_grad():
            embeds = self.backbone.get_input_embeddings()(ids.to(self.device))
        return embeds.to(self.adapter_dtype)

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
        L, K = self.config.segment_len, self.slots_per_segment
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
            state = memory.features[(full - 1) * K : full * K] if full and not memory.reads_layers else None
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
        total = sum(len(j["ids"]) for j in jobs)
        with _progress_bar(progress, total, "Compressing") as advance, torch.no_grad():
            if self.adapter.reads_layers:
                made = [self._compress_layer_job(job, advance) for job in jobs]
            else:
                made = [{"features": f} for f in self._compress_paper_jobs(jobs, advance)]
        results = []
        for job, out, meta in zip(jobs, made, metadata):
            base: CompressedMemory | None = job["base"]
            kept = job["kept"]
            spans = segment_spans(job["starts"], job["ends"], L)
            new = out["features"]
            if base is not None:
                if not self.adapter.reads_layers:
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
                    positions=out.get("positions"),
                    latents=out.get("latents"),
                )
            )
            self.keys_values(results[-1])  # projected now, with the build, so that no question pays for it
        return results

    def _compress_paper_jobs(self, jobs: list[dict[str, Any]], advance: Callable[[int], None]) -> list[torch.Tensor]:
        """The paper reader's batched recurrence over token embeddings, each job from its own state."""
        initial = self.adapter.compressor.initial_latents.detach()
        states = torch.stack([(j["state"] if j["state"] is not None else initial).to(initial) for j in jobs])
        return self.adapter.compressor.compress(
            self.embed_tokens, [j["ids"] for j in jobs], self.config.segment_len, states=states, on_segment=advance
        )

    # ----- the layer reader's memory ---------------------------------------------------------------

    @torch.no_grad()
    def segment_states(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One frozen forward over segments [B, L]: each memory layer's normed input states, [B, L, M, d].

        The layer reader's memory lives in these spaces. The forward stops once the last memory layer's
        input is taken: the layers above it and the LM head are never run.
        """
        layers, memory_layers, blocks = self.injector.layers, self.config.gca_layers, self.adapter.blocks()
        captured: dict[int, torch.Tensor] = {}

        def capture(index: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                captured[index] = blocks[index].parts.norm(args[0] if args else kwargs["hidden_states"])
                if index == memory_layers[-1]:
                    raise _StopForward

            return hook

        handles = [layers[i].register_forward_pre_hook(capture(i), with_kwargs=True) for i in memory_layers]
        try:
            self.backbone.base_model(input_ids=ids.to(self.device), attention_mask=mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack([captured[i] for i in memory_layers], dim=2).to(self.adapter_dtype)  # (B, L, M, d)

    def compress_layer_segments(
        self,
        segments: Sequence[torch.Tensor],
        state: torch.Tensor | None = None,
        *,
        grad_steps: set[int] | None = None,
        on_segment: Callable[[int], None] | None = None,
    ) -> LayerCompression:
        """The layer reader's recurrence over token segments [B, L_i] (one frozen forward each).

        Steps outside ``grad_steps`` run without a graph, which cuts the recurrence there (truncated/selective
        BPTT).
        """
        compressor = self.adapter.compressor
        state = compressor.initial_state(segments[0].shape[0]) if state is None else state
        slots, centres, latents, scores, offset = [], [], [], [], 0
        # Selected slots depend on the segment's ids alone: reusable from the cache (``reusing_segments``).
        cache = self._segment_cache if compressor.salience is not None and not torch.is_grad_enabled() else None
        for i, ids in enumerate(segments):
            if (cached := cache.get(ids) if cache is not None else None) is not None:
                new, where = cached
            else:
                states = self.segment_states(ids)
                with torch.set_grad_enabled(torch.is_grad_enabled() and (grad_steps is None or i in grad_steps)):
                    salience = compressor.scores(states) if compressor.salience is not None else None
                    new, where, state = compressor.step(state, states, scores=salience)
                    if salience is not None and torch.is_grad_enabled():
                        scores.append(salience)
                if cache is not None:
                    cache.put(ids, new, where)
            slots.append(new)
            centres.append(where + offset)
            if state is not None:
                latents.append(state)
            offset += ids.shape[1]
            if on_segment is not None:
                on_segment(int(ids.numel()))
        return LayerCompression(torch.cat(slots, dim=1), torch.cat(centres, dim=1), latents, torch.cat(scores, dim=1) if scores else None)

    def _compress_layer_job(self, job: dict[str, Any], on_segment: Callable[[int], None]) -> dict[str, torch.Tensor]:
        """Slots, positions and latents of one text (continuing ``job['base']`` from its last full segment)."""
        L, base, kept = self.config.segment_len, job["base"], job["kept"]
        k_lat = getattr(self.adapter.compressor, "num_latents", 0)
        state = None
        if base is not None and kept and base.latents is not None:
            state = base.latents[(kept - 1) * k_lat : kept * k_lat][None].to(self.device, self.adapter_dtype)
        segments = [piece[None] for piece in torch.split(job["ids"], L)]
        slots, centres, latents, _ = self.compress_layer_segments(segments, state, on_segment=on_segment)
        features, positions = slots[0].float().cpu(), centres[0].float().cpu() + kept * L
        stacked = torch.cat([s[0] for s in latents]).float().cpu() if latents else None
        if base is not None:
            rows = slots_in(kept * L, L, self.config.tokens_per_slot)
            features = torch.cat([base.features[:rows], features])
            positions = torch.cat([base.positions[:rows], positions])
            if stacked is not None and base.latents is not None:
                stacked = torch.cat([base.latents[: kept * k_lat], stacked])
        return {"features": features, "positions": positions, "latents": stacked}

    @torch.no_grad()
    def compress_ids(self, ids: torch.Tensor, query_ids: torch.Tensor | None = None) -> MemoryRows:
        """Token ids [N] straight to the rows a prompt reads (placed right before it), QD on ``query_ids``.

        For text that is compressed for one prompt and not kept (an overlong prompt's head, evaluation).
        """
        compressor = self.adapter.compressor
        kv = self.question_kv(query_ids)
        if not self.adapter.reads_layers:
            return MemoryRows(compressor.compress(self.embed_tokens, [ids], self.config.segment_len, query_kv=kv)[0], None, len(ids))
        segments = [piece[None] for piece in torch.split(ids, self.config.segment_len)]
        slots, centres, latents, _ = self.compress_layer_segments(segments)
        bias = None
        if compressor.query_mixer is not None:
            bias = compressor.slot_bias(compressor.slot_latents(latents, [s.shape[1] for s in segments], slots), kv)[0].cpu()
        return MemoryRows(slots[0].float().cpu(), centres[0].float().cpu() - len(ids), len(ids), bias)

    def query_ids(self, question: str) -> torch.Tensor:
        """The question's token ids that condition QD compression (its first ``max_query_tokens``)."""
        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"][: self.config.max_query_tokens]
        return torch.tensor(ids, dtype=torch.long)

    def question_kv(self, question: str | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """QD's one view of the question: its keys and values for the compressor's query mixer, from its text
        or token ids ([T] or [B, T]); None without a question or without QD."""
        if question is None or self.adapter.compressor.query_mixer is None:
            return None
        ids = self.query_ids(question) if isinstance(question, str) else question
        if not ids.numel():
            return None
        return self.adapter.compressor.project_query(self.embed_tokens(ids if ids.dim() == 2 else ids[None]))

    def memory_for_query(self, memory: CompressedMemory, question: str | None, *, progress: Progress = False) -> torch.Tensor:
        """The features the decoder should read for ``question``: QD recompression when configured."""
        memory.check_compatible(self.adapter_fingerprint, self.signature)
        if not (self.config.query_dependent and question) or self.adapter.reads_layers:
            # The layer reader's question enters at reading time: the copied heads attend from the prompt.
            return memory.features
        compressor = self.adapter.compressor
        with torch.no_grad(), _progress_bar(progress, memory.num_tokens, "Reading for the question") as advance:
            kv = self.question_kv(question)
            if kv is None:
                return memory.features
            return compressor.compress(
                self.embed_tokens, [memory.token_ids.long()], memory.segment_len, query_kv=kv, on_segment=advance
            )[0]

    def for_question(self, memory: CompressedMemory, question: str | None, segments: list[int] | None = None) -> CompressedMemory:
        """The memory as ``question`` reads it: with ``whole_segments`` = k, its k segments most relevant to the
        question (or the given ``segments``) whole (every token's states, one frozen forward over k segments), the
        rest as slots (with ``whole_beside``, every slot stays and the whole segments sit beside them). A whole
        reader reads the whole rows.

        A view: the stored memory is unchanged, and provenance maps the view's rows to segments as usual.
        """
        if not (self.config.whole_segments and question and memory.reads_layers):
            return memory
        memory.check_compatible(self.adapter_fingerprint, self.signature)
        rows = read_whole(self, memory.token_ids, memory.features, memory.positions, question, segments)
        if rows is None:
            return memory
        view = dataclasses.replace(memory, features=rows.features, positions=rows.positions, whole_rows=rows.whole)
        stored = self.keys_values(memory)
        if stored is not None:  # the stored rows' keys/values are reused; only the whole segments' are projected
            added = rows.source < 0
            projected = stored.new_empty(len(rows.source), *stored.shape[1:])
            projected[~added] = stored[rows.source[~added].to(stored.device)]
            whole = None if rows.whole is None else rows.whole[added]
            projected[added] = self.injector.project_rows(rows.features[added].to(self.device, self.adapter_dtype), whole)
            view.projected = (self._projection_key(), projected)
        return view

    def for_question_all(self, memories: Sequence[CompressedMemory], question: str | None) -> tuple[CompressedMemory, ...]:
        """The memories one prompt reads, as ``question`` reads them together: its ``whole_segments`` most relevant
        segments over all of them are read whole (k segments for a question over several books, not k per book)."""
        layered = [m.token_ids for m in memories if m.reads_layers]
        k = self.config.whole_segments
        chosen = iter(relevant_segments_of_texts(self.tokenizer, layered, self.config.segment_len, question or "", k))
        return tuple(self.for_question(m, question, next(chosen)) if m.reads_layers else m for m in memories)

    def _projection_key(self) -> str:
        return f"{self.adapter_fingerprint}|{self.adapter_dtype}|{self.device}"

    def keys_values(self, memory: CompressedMemory) -> torch.Tensor | None:
        """The layer readers' keys/values of every row of ``memory`` before RoPE, [N, M, 2, H_kv, head_dim]; None
        for the paper reader.

        Why: they do not depend on the prompt, so they are projected once per memory and adapter (kept on the
        memory, never saved) instead of once per answer (measured at 128K tokens: 1.3 s of a 9 s answer).
        """
        if not (memory.reads_layers and self.adapter.reads_layers):
            return None
        key = self._projection_key()
        if memory.projected is None or memory.projected[0] != key:
            features = memory.features.to(self.device, self.adapter_dtype)
            memory.projected = (key, self.injector.project_rows(features, memory.whole_rows))
        return memory.projected[1]

    def read_memories(
        self, memories: Sequence[CompressedMemory], question: str | None = None, *, query_dependent: bool = True
    ) -> MemoryRows | None:
        """The rows one prompt reads from several memories, in order (QD-recompressed for ``question``)."""
        if not memories:
            return None
        parts = []
        for memory in memories:
            if self.adapter.reads_layers:
                bias = self.slot_bias(memory, question if query_dependent else None)
                parts.append(MemoryRows.of(memory, bias=bias, keys_values=self.keys_values(memory)))
            else:
                parts.append(MemoryRows.of(memory, self.memory_for_query(memory, question) if query_dependent else None))
        return MemoryRows.concat(parts)

    @torch.no_grad()
    def slot_bias(self, memory: CompressedMemory, question: str | None) -> torch.Tensor | None:
        """The layer reader's QD step for ``question``: each stored slot latent reads it and scores its slot, [N].

        No pass over the book: only the memory's latents and the question's embeddings are read.
        """
        memory.check_compatible(self.adapter_fingerprint, self.signature)
        latents = memory.slot_latents()
        bias = self.question_bias((memory.features[:, 0] if latents is None else latents)[None], question or None)
        return None if bias is None else bias[0].float().cpu()

    def question_bias(self, latents: torch.Tensor, question: str | torch.Tensor | None) -> torch.Tensor | None:
        """QD relevance [B, N] of slots from their latents [B, N, d] (an uncorrected slot's latent is its
        first-layer state) for ``question`` (text or token ids; None: the question-free score); None without QD.

        The one QD step over rows already built: stored memories, evaluation systems and distractor haystacks.
        """
        if self.adapter.compressor.query_mixer is None:
            return None
        kv = self.question_kv(question)
        return self.adapter.compressor.slot_bias(latents.to(self.device, self.adapter_dtype), kv)

    def memory_states(self, memory: MemoryLike) -> MemoryBatch:
        """What the GCA blocks attend to: rows [B, N, d] (plus the order signal) or [B, N, M, d] for the layer
        reader, a padding mask [B, N] (None when nothing is padded), and for the layer reader RoPE positions
        [B, N] and the QD relevance bias [B, N] (or None)."""
        if memory is None:
            return MemoryBatch(None, None, None, None, None, None)
        items = [memory] if isinstance(memory, (CompressedMemory, MemoryRows, torch.Tensor)) else list(memory)
        rows = []
        for m in items:
            if isinstance(m, CompressedMemory):
                m.check_compatible(self.adapter_fingerprint, self.signature)
                m = MemoryRows.of(m, keys_values=self.keys_values(m))
            rows.append(m if isinstance(m, MemoryRows) else MemoryRows(m))
        dtype = self.adapter_dtype
        if self.adapter.reads_layers and any(r.positions is None for r in rows):
            raise LCIRCError("the layer reader needs memory rows with positions: pass a CompressedMemory or MemoryRows")
        batched = len(rows) == 1 and rows[0].features.dim() == (4 if self.adapter.reads_layers else 3)
        single = len(rows) == 1 and not batched  # one prompt's rows: a batch of one, read in place (no padded copy)
        if batched or single:  # (batched: one batch of training memories, all the same length)
            first = rows[0]
            features, positions, bias, mask = first.features.to(self.device, dtype), first.positions, first.bias, None
            features = features[None] if single else features
            whole, keys_values = first.whole, first.keys_values
        else:
            longest = max(len(r.features) for r in rows)
            features = torch.zeros(len(rows), longest, *rows[0].features.shape[1:], device=self.device, dtype=dtype)
            mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=self.device)
            positions = torch.zeros(len(rows), longest, device=self.device) if self.adapter.reads_layers else None
            has_bias = any(r.bias is not None for r in rows)
            bias = torch.zeros(len(rows), longest, device=self.device, dtype=dtype) if has_bias else None
            has_whole = any(r.whole is not None for r in rows)
            whole = torch.zeros(len(rows), longest, device=self.device, dtype=torch.bool) if has_whole else None
            keys_values = None  # projected beforehand only if every prompt's rows were
            if all(r.keys_values is not None for r in rows):
                keys_values = torch.zeros(len(rows), longest, *rows[0].keys_values.shape[1:], device=self.device, dtype=dtype)
            for i, r in enumerate(rows):
                features[i, : len(r.features)] = r.features.to(features)
                mask[i, : len(r.features)] = True
                if positions is not None:
                    positions[i, : len(r.features)] = r.positions.to(positions)
                if bias is not None and r.bias is not None:
                    bias[i, : len(r.features)] = r.bias.to(bias)
                if whole is not None and r.whole is not None:
                    whole[i, : len(r.features)] = r.whole.to(whole)
                if keys_values is not None:
                    keys_values[i, : len(r.features)] = r.keys_values.to(keys_values)
            mask = None if bool(mask.all()) else mask
        if positions is not None:
            positions = positions.to(self.device, torch.float32).reshape(features.shape[0], -1)
            positions = fold_positions(positions, self.config.position_horizon)
        if bias is not None:
            bias = bias.to(self.device).reshape(features.shape[0], -1)
        if whole is not None:
            whole = whole.to(self.device).reshape(features.shape[0], -1)
            if self.config.whole_near_prompt and positions is not None:
                positions = whole_before_prompt(positions, whole)
        if keys_values is not None:
            keys_values = keys_values.to(self.device, dtype).reshape(features.shape[0], -1, *keys_values.shape[-4:])
        if not self.adapter.reads_layers:
            features = self.adapter.compressor.memory_states(features)
        return MemoryBatch(features, mask, positions, bias, whole, keys_values)

    @property
    def adapter_dtype(self) -> torch.dtype:
        return next(self.adapter.gca.parameters()).dtype

    # ----- decoding ---------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, memory: MemoryLike = None, **kwargs: Any) -> Any:
        """The backbone's forward (``labels=`` gives ``out.loss``) with the memory injected."""
        with self.injector.conditioned(*self.memory_states(memory)):
            return self.backbone(input_ids=input_ids.to(self.device), **kwargs)

    def generate(self, input_ids: torch.Tensor, memory: MemoryLike = None, **kwargs: Any) -> torch.Tensor:
        """``backbone.generate`` with a memory that stays fixed for the whole call (KV cache stays valid)."""
        batch = self.memory_states(memory)
        kwargs.setdefault(
            "pad_token_id",
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
        )
        with self.injector.conditioned(*batch):
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

    def prepare_answer(
        self,
        question: str,
        memories: Memories = None,
        *,
        history: list[dict[str, str]] | None = None,
        max_new_tokens: int = 128,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        query_dependent: bool = True,
    ) -> PreparedPrompt:
        """The one way from a question, its memories and the chat so far to what the decoder reads.

        The prompt is the question in the chat template (earlier ``history`` turns kept while they fit the
        window); the memories are read in order, QD-recompressed for the question unless ``query_dependent``
        is False. Every front end (app, LlamaIndex, LangChain, CLI) answers through this and
        :meth:`provenance`, so the same memory and question give the same answer and sources everywhere.
        """
        sources = self._sources(memories)
        ids = self.prompt_ids(question, max_new_tokens, system_prompt, history=history)
        if query_dependent:
            sources = self.for_question_all(sources, question)
        rows = self.read_memories(sources, question, query_dependent=query_dependent)
        return PreparedPrompt(ids, rows, sum(m.num_tokens for m in sources), sources, question)

    def _sources(self, memories: Memories) -> tuple[CompressedMemory, ...]:
        """One memory, several or none, as a tuple; a wrong type or another adapter's memory fails before any work."""
        items = (memories,) if isinstance(memories, CompressedMemory) else tuple(memories or ())
        for memory in items:
            if not isinstance(memory, CompressedMemory):
                raise TypeError(f"expected a CompressedMemory (from LCIRCModel.compress), got {type(memory).__name__}")
            memory.check_compatible(self.adapter_fingerprint, self.signature)
        return items

    def provenance(self, prepared: PreparedPrompt, answer: str, *, top_k: int = 3) -> Provenance:
        """The passages of ``prepared.sources`` that ``answer`` read most (BM25 for the question when the gates
        are closed): one extra forward over the prompt and the answer."""
        return answer_provenance(self, prepared, answer, top_k)

    def answer(
        self,
        question: str,
        memory: Memories = None,
        *,
        max_new_tokens: int = 128,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        **generate_kwargs: Any,
    ) -> str:
        """Answer ``question`` about the compressed text(s) (greedy unless sampling arguments are given)."""
        prepared = self.prepare_answer(question, memory, max_new_tokens=max_new_tokens, system_prompt=system_prompt)
        return self.generate_text(prepared, max_new_tokens=max_new_tokens, **generate_kwargs)[0]

    def stream_answer(
        self,
        question: str,
        memory: Memories = None,
        *,
        max_new_tokens: int = 128,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        **generate_kwargs: Any,
    ) -> GenerationStream:
        """Yield the answer in pieces as it is generated."""
        prepared = self.prepare_answer(question, memory, max_new_tokens=max_new_tokens, system_prompt=system_prompt)
        return self.stream_text(prepared, max_new_tokens=max_new_tokens, **generate_kwargs)

    # ----- arbitrary prompts: what framework integrations call ------------------------------------------

    def prepare_prompt(
        self,
        prompt: str | Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 128,
        memories: Memories = None,
        query: str | None = None,
    ) -> PreparedPrompt:
        """Tokenize a prompt (text, or chat messages for the chat template), fit it to the window and add the
        ``memories`` it reads (QD-recompressed for ``query``).

        A prompt longer than ``window - max_new_tokens`` is not cut: its head is compressed into memory
        (query-dependent on the prompt's last tokens in QD mode) and only the tail goes to the decoder. The
        rows are read in order: every given memory, then the prompt's own compressed head, right before its tail.
        """
        sources = self._sources(memories)
        own = self._fit_prompt(prompt, max_new_tokens)
        if not sources:
            return own
        sources = self.for_question_all(sources, query)
        parts = [self.read_memories(sources, query)] + ([own.rows] if own.rows is not None else [])
        tokens = own.compressed_tokens + sum(m.num_tokens for m in sources)
        return PreparedPrompt(own.input_ids, MemoryRows.concat(parts), tokens, sources, query)

    def _fit_prompt(self, prompt: str | Sequence[dict[str, str]], max_new_tokens: int) -> PreparedPrompt:
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
        query = tail[-self.config.max_query_tokens :] if self.config.query_dependent else None
        rows = self.compress_ids(head, query)
        return PreparedPrompt(tail[None], rows, len(head))

    def generate_text(self, prepared: PreparedPrompt, *, max_new_tokens: int = 128, **generate_kwargs: Any) -> tuple[str, int]:
        """Generate from a prepared prompt; returns the text and the number of new tokens."""
        generate_kwargs.setdefault("do_sample", False)
        out = self.generate(prepared.input_ids, memory=prepared.rows, max_new_tokens=max_new_tokens, **generate_kwargs)
        new_tokens = out[0, prepared.input_ids.shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(), int(new_tokens.numel())

    def stream_text(self, prepared: PreparedPrompt, *, max_new_tokens: int = 128, **generate_kwargs: Any) -> GenerationStream:
        """Yield generated text in pieces (generation runs in a worker thread that stops when the stream is
        closed or dropped); afterwards the stream's ``new_tokens`` and ``finish_reason`` say what was made."""
        generate_kwargs.setdefault("do_sample", False)
        run = functools.partial(self.generate, prepared.input_ids, memory=prepared.rows)
        return GenerationStream(run, self.tokenizer, prepared.input_ids.shape[1], max_new_tokens, **generate_kwargs)


Memories = CompressedMemory | Sequence[CompressedMemory] | None


class LayerCompression(NamedTuple):
    """The layer reader's compression of some segments.

    ``slots`` [B, N, M, d]; ``centres`` [B, N] token positions from the first segment's start; ``latents``
    after every step [B, K_lat, d] (empty without slot correction; slot k of a segment was made by its
    latent k); ``scores`` [B, tokens] salience logits of every token (slot selection, with gradients only).
    """

    slots: torch.Tensor
    centres: torch.Tensor
    latents: list[torch.Tensor]
    scores: torch.Tensor | None


class MemoryBatch(NamedTuple):
    """The arguments of ``MemoryInjector.conditioned``: rows, padding mask, RoPE positions, QD bias, whole rows and
    the rows' keys/values projected beforehand."""

    states: torch.Tensor | None
    mask: torch.Tensor | None
    positions: torch.Tensor | None
    bias: torch.Tensor | None
    whole: torch.Tensor | None
    keys_values: torch.Tensor | None


class _StopForward(Exception):
    """Raised by a capture hook to end a forward once the needed layer inputs are taken."""


@dataclass
class PreparedPrompt:
    """What one answer reads: decoder input ids [1, T], the memory rows they attend to (or None) and how many
    tokens those hold; ``sources`` are the memories whose rows come first, in order, and ``question`` what they
    were read for (provenance: ``LCIRCModel.provenance``)."""

    input_ids: torch.Tensor
    rows: MemoryRows | torch.Tensor | None
    compressed_tokens: int
    sources: tuple[CompressedMemory, ...] = ()
    question: str | None = None

    @property
    def input_tokens(self) -> int:
        return int(self.input_ids.shape[1]) + self.compressed_tokens

    @property
    def memory(self) -> MemoryRows | torch.Tensor | None:
        """Deprecated name of :attr:`rows` (a ``memory`` elsewhere is a ``CompressedMemory``)."""
        warnings.warn("PreparedPrompt.memory is now PreparedPrompt.rows", DeprecationWarning, stacklevel=2)
        return self.rows


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
