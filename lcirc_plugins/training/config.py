"""``TrainConfig``: every hyper-parameter of a run, read from a JSON preset plus ``--key=value`` overrides.

The resolved config is written next to every checkpoint, so a run can always be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from ..data.shared import expand_shared
from ..errors import ConfigError
from .bptt import BPTT_MODES


@dataclass
class TrainConfig:
    stage: str = field(
        default="lm", metadata={"help": "lm (stage 1: next-token loss on the window after the memory) or qa (stage 2)."}
    )
    data: str = field(
        default="", metadata={"help": "Training data: .txt file or folder, .jsonl, a datasets folder, or synthetic:TASK."}
    )
    eval_data: str = field(default="", metadata={"help": "Held-out data (same forms); empty: every 20th document of `data`."})
    backbone: str = field(default="smollm2-135m-instruct", metadata={"help": "Backbone name, folder, hub id or .gguf file."})
    init_adapter: str = field(
        default="", metadata={"help": "Adapter directory to start from (e.g. the stage-1 result for stage 2)."}
    )
    adapter: dict[str, Any] = field(default_factory=dict, metadata={"help": "LCIRCConfig fields for a fresh adapter, or changed on init_adapter's (new modules start fresh)."})
    output_dir: str = field(default="runs/lcirc", metadata={"help": "Where checkpoints, metrics.jsonl and the final adapter go."})
    seed: int = field(default=0, metadata={"help": "Seed of data order, segment lengths, BPTT step choice and init."})
    steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    grad_accum: int = field(default=1, metadata={"help": "Examples per optimizer step (per process)."})
    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate (Adam)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    schedule: str = field(default="constant", metadata={"help": "constant or cosine decay after warm-up."})
    gate_lr_scale: float = field(
        default=1.0,
        metadata={
            "help": "Learning-rate multiplier of the tanh gates (closed gates pass no gradient to anything else, so they must open fast)."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0 disables)."})
    bptt: str = field(default="selective", metadata={"help": "full, truncated or selective (the paper's)."})
    bptt_window: int = field(default=8, metadata={"help": "Steps with gradient in truncated/selective BPTT."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute compression steps in backward."})
    min_train_segment_len: int = field(default=64, metadata={"help": "Shortest random segment length in training."})
    max_train_segment_len: int = field(
        default=512,
        metadata={"help": "Longest random segment length in training (at most the adapter's max_segment_len, its position table)."},
    )
    min_segments: int = field(default=1, metadata={"help": "Fewest segments compressed before the window."})
    max_segments: int = field(default=8, metadata={"help": "Most segments compressed before the window (curriculum end)."})
    curriculum_steps: int = field(
        default=0, metadata={"help": "Steps over which max segments grows from min_segments (0: no curriculum)."}
    )
    reconstruct: float = field(
        default=0.0,
        metadata={
            "help": "Stage 1: share of windows that repeat a piece of the compressed text (an autoencoding signal that teaches reading the memory) instead of continuing it."
        },
    )
    distractors: str = field(
        default="",
        metadata={
            "help": "Layer reader: plain text files/folders (comma-separated) cut into segments that are read before and "
            "after each training example's own text, each compressed once (training/distractors.py): long haystacks "
            "at the cost of short examples."
        },
    )
    eval_distractors: str = field(
        default="",
        metadata={
            "help": "Held-out plain text for distractor segments in evaluation: every held-out example reads exactly the "
            "current most distractor segments, so a gated curriculum is judged at the length it trains."
        },
    )
    distractor_pool: int = field(
        default=256, metadata={"help": "Most distinct distractor segments (one frozen forward each, once)."}
    )
    distractor_segments: int = field(
        default=0, metadata={"help": "Most distractor segments around one example (drawn uniformly from 0 to this)."}
    )
    distractor_start: int = field(
        default=1, metadata={"help": "With curriculum_gate: the most distractor segments at the start of training."}
    )
    curriculum_gate: float = field(
        default=0.0,
        metadata={
            "help": "Held-out answer accuracy (eval_answer_contains) at which the most distractor segments doubles, from "
            "distractor_start up to distractor_segments (0: distractor_segments from the start)."
        },
    )
    loss_window: int = field(default=256, metadata={"help": "Decoder tokens with loss after the memory (stage 1)."})
    lm_context: int = field(
        default=0,
        metadata={
            "help": "Continuation examples: text the decoder reads without loss between the memory and the loss_window "
            "tokens. The card's perplexity reads a window this long before the scored tokens (1,024 - 128 = 896), so the "
            "memory learns what it adds beyond the window instead of what the window already says."
        },
    )
    lm_decoy: float = field(
        default=0.0,
        metadata={
            "help": "Share of training continuations whose memory hides an unasked pass key in place of a sentence's worth of "
            "text, so that reading the memory from far back does not learn to pass its most salient row into text that "
            "has nothing to do with it (R28 drew the key into off-topic answers)."
        },
    )
    distill: float = field(
        default=0.0,
        metadata={"help": "Weight of context distillation: KL from the backbone reading the compressed text in its own window."},
    )
    distill_where_right: bool = field(
        default=False,
        metadata={
            "help": "Distill only at the labelled tokens the backbone reading the text itself predicts right. Where it is "
            "wrong (SmolLM2 rambles about a pass key in plain view: 'The pass key is a ...') its distribution pulls the "
            "reader toward that mistake."
        },
    )
    salience_distill: float = field(
        default=1.0,
        metadata={
            "help": "Slot selection: weight of the KL from where the backbone looks in the text (its attention) to the salience scorer."
        },
    )
    salience_temperature: float = field(
        default=0.25,
        metadata={
            "help": "Slot selection: the attention target is sharpened to mass^(1/T) before the KL. Selection keeps a top-K, so "
            "the order at the top matters, not the tail (measured: T = 1 covered the pass key in 72% of held-out segments "
            "and fell with more steps, T = 0.25 in every segment whose budget could hold it)."
        },
    )
    lm_data: str = field(
        default="",
        metadata={"help": "qa stage: plain text (file or folder) for the language-modelling examples of lm_share (every 20th document held out)."},
    )
    lm_share: float = field(
        default=0.0,
        metadata={
            "help": "qa stage: share of examples that continue a text of lm_data (stage-1 examples: the loss on loss_window "
            "tokens after the compressed text), so that reading a memory keeps the backbone's own continuation (perplexity)."
        },
    )
    whole_share: float = field(
        default=0.0,
        metadata={
            "help": "Layer reader: share of training examples whose own segments (and one distractor) are read whole, every "
            "token's states, as the question's most relevant segments are at answer time (LCIRCConfig.whole_segments)."
        },
    )
    whole_distractor_candidates: int = field(
        default=0,
        metadata={
            "help": "With whole_share: the whole distractor is the one BM25 ranks highest for the question among this many "
            "random distractor-pool segments, as the question's second whole segment in a book of that many segments is "
            "(0: any segment, rarely about the question)."
        },
    )
    answers_in_own_words: float = field(
        default=0.0,
        metadata={
            "help": "qa stage: share of examples whose answer label becomes the backbone's own reply when it reads the "
            "compressed text in its window (cut after the clause with the answer), or, when that reply misses the answer, "
            "its opening words that restate the question and then the answer ('The pass key is 71432.'): the reader learns "
            "the step after the words the product's reply opens with, not only a bare answer right after the prompt."
        },
    )
    own_words_loss: str = field(
        default="reply",
        metadata={
            "help": "With answers_in_own_words: 'reply' puts the loss on the whole reply; 'answer' only from the answer on "
            "(the opening words are decoder input, so the reply's first word stays the reader's choice)."
        },
    )
    train_only: str = field(
        default="",
        metadata={
            "help": "Comma-separated name fragments: only adapter parameters whose names contain one are trained, the rest "
            "stay frozen (e.g. 'whole.' trains the whole readers and leaves how slots are read as it was); empty: all."
        },
    )
    min_doc_tokens: int = field(default=0, metadata={"help": "Skip documents shorter than this (FineWeb-Edu style filter)."})
    eval_every: int = field(default=100, metadata={"help": "Evaluate every n steps (0 disables)."})
    eval_examples: int = field(default=16, metadata={"help": "Held-out examples per evaluation."})
    save_every: int = field(default=100, metadata={"help": "Checkpoint every n steps."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Most recent checkpoints kept."})
    log_every: int = field(default=1, metadata={"help": "Write a metrics line every n steps."})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (accelerate)."})
    resume: bool = field(default=True, metadata={"help": "Resume from the latest checkpoint in output_dir if there is one."})
    # Deprecated names, accepted with a warning: in one JSON file beside the adapter's own window and
    # max_segment_len they meant something else.
    window: InitVar[int | None] = None
    min_segment_len: InitVar[int | None] = None
    max_segment_len: InitVar[int | None] = None

    def __post_init__(self, window: int | None, min_segment_len: int | None, max_segment_len: int | None) -> None:
        for old, value in (("window", window), ("min_segment_len", min_segment_len), ("max_segment_len", max_segment_len)):
            if value is not None:
                new = RENAMED[old]
                warnings.warn(f"TrainConfig.{old} is now {new}", DeprecationWarning, stacklevel=3)
                setattr(self, new, value)
        for name in ("data", "eval_data", "lm_data", "distractors", "eval_distractors"):  # "@shared/..." paths (data/shared.py)
            setattr(self, name, expand_shared(getattr(self, name)))
        if self.stage not in ("lm", "qa"):
            raise ConfigError(f"stage must be 'lm' or 'qa', got {self.stage!r}")
        if self.bptt not in BPTT_MODES:
            raise ConfigError(f"bptt must be one of {BPTT_MODES}, got {self.bptt!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        for name in (
            "steps",
            "grad_accum",
            "bptt_window",
            "min_train_segment_len",
            "max_train_segment_len",
            "min_segments",
            "max_segments",
            "loss_window",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.distractor_pool <= 0 or self.distractor_segments < 0 or not 1 <= self.distractor_start:
            raise ConfigError("distractor_pool and distractor_start must be > 0 and distractor_segments >= 0")
        if not 0.0 <= self.curriculum_gate <= 1.0:
            raise ConfigError(f"curriculum_gate is an accuracy in [0, 1], got {self.curriculum_gate}")
        if not 0.0 <= self.lm_share <= 1.0 or (self.lm_share > 0 and (self.stage != "qa" or not self.lm_data)):
            raise ConfigError(f"lm_share is a share of qa-stage examples in [0, 1] and needs lm_data, got {self.lm_share}")
        if not 0.0 <= self.whole_share <= 1.0:
            raise ConfigError(f"whole_share is a share of examples in [0, 1], got {self.whole_share}")
        if not 0.0 <= self.answers_in_own_words <= 1.0 or (self.answers_in_own_words > 0 and self.stage != "qa"):
            raise ConfigError(
                f"answers_in_own_words is a share in [0, 1] of qa-stage examples (answers to questions), got {self.answers_in_own_words}"
            )
        if self.own_words_loss not in ("reply", "answer"):
            raise ConfigError(f"own_words_loss is 'reply' or 'answer', got {self.own_words_loss!r}")
        if self.whole_distractor_candidates < 0:
            raise ConfigError(f"whole_distractor_candidates is a number of segments >= 0, got {self.whole_distractor_candidates}")
        if self.salience_temperature <= 0:
            raise ConfigError(f"salience_temperature must be > 0, got {self.salience_temperature}")
        if self.distill < 0 or self.salience_distill < 0:
            raise ConfigError(f"distill and salience_distill are loss weights >= 0, got {self.distill}, {self.salience_distill}")
        if not 0.0 <= self.lm_decoy <= 1.0:
            raise ConfigError(f"lm_decoy is a share of continuation examples in [0, 1], got {self.lm_decoy}")
        if self.lm_context < 0:
            raise ConfigError(f"lm_context counts tokens, got {self.lm_context}")
        if not 0.0 <= self.reconstruct <= 1.0:
            raise ConfigError(f"reconstruct is a probability, got {self.reconstruct}")
        if self.min_train_segment_len > self.max_train_segment_len or self.min_segments > self.max_segments:
            raise ConfigError("min_train_segment_len/min_segments must not exceed max_train_segment_len/max_segments")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file_and_overrides(cls, path: str | None, overrides: list[str]) -> TrainConfig:
        """A JSON preset (optional), then ``key=value`` overrides parsed by the field's type."""
        values: dict[str, Any] = {}
        if path:
            try:
                values = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"cannot read training config {path}: {err}") from err
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {_current_name(key): value for key, value in values.items()}
        unknown = sorted(set(values) - set(fields))
        for item in overrides:
            key, sep, raw = item.removeprefix("--").partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} must look like --key=value")
            key = _current_name(key)
            if key not in fields:
                unknown.append(key)
                continue
            values[key] = _parse(raw, fields[key].type, values.get(key, fields[key].default))
        if unknown:
            raise ConfigError(f"unknown training config keys {unknown}; known keys: {sorted(fields)}")
        return cls(**values)


RENAMED = {"window": "loss_window", "min_segment_len": "min_train_segment_len", "max_segment_len": "max_train_segment_len"}


def _current_name(key: str) -> str:
    if key in RENAMED:
        warnings.warn(f"training config key {key!r} is now {RENAMED[key]!r}", DeprecationWarning, stacklevel=3)
        return RENAMED[key]
    return key


def _parse(raw: str, annotation: Any, current: Any) -> Any:
    """Parse an override by the type of the field's current value (JSON for dicts)."""
    kind = type(current) if current is not None and not isinstance(current, dataclasses._MISSING_TYPE) else str
    if kind is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"expected true/false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError as err:
            raise ConfigError(f"expected a {kind.__name__}, got {raw!r}") from err
    if kind in (dict, list) or "dict" in str(annotation):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise ConfigError(f"expected JSON, got {raw!r}") from err
    return raw
