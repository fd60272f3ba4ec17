"""The training loop: flat and readable (nanoGPT), on accelerate so the same code runs on CPU, one GPU or
many machines. Only adapter weights are optimised and saved.

Checkpoints are directories written under a temporary name and renamed, so ``kill -9`` never leaves a
half checkpoint: the adapter (safetensors), the optimizer and scheduler state (read back with
``weights_only=True``), RNG states and the data position in ``trainer_state.json``. Old checkpoints are
renamed away before they are deleted, and resuming skips a damaged checkpoint (with a warning) for the one
before it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from tqdm.auto import tqdm

from ..errors import CorruptFileError, LCIRCError
from ..model.config import LCIRCConfig
from ..model.lcirc_model import LCIRCModel
from ..model.memory import MemoryRows
from .bptt import compress_for_training, steps_with_gradient
from .config import TrainConfig
from .data import IGNORE, ExampleStream, TrainExample
from .distractors import DistractorPool, surround
from .own_words import in_own_words, in_teacher_words
from .plots import plot_metrics

STATE_NAME = "trainer_state.json"
PYTHON_RNGS = ("bptt_rng", "whole_rng", "own_words_rng")  # saved in each checkpoint, so a resumed run draws as one run would
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# What reading a truncated, garbled or missing checkpoint file raises (torch.load, json, safetensors, setstate).
UNREADABLE = (LCIRCError, OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError)


class TrainingDivergedError(LCIRCError, RuntimeError):
    """The loss became NaN or infinite."""


class LCIRCTrainingModule(nn.Module):
    """One example's loss as a ``forward``, so DDP sees a single module call per example.

    The loss is the cross-entropy on the labelled tokens, plus ``distill`` times the KL divergence from the
    backbone reading the same text in its own window (context distillation: a signal on every labelled
    token's whole distribution, where cross-entropy on a few random digits gives little).
    """

    def __init__(self, model: LCIRCModel, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    def memory(self, example: TrainExample, grad_steps: set[int] | None = None, whole: bool = False) -> Any:
        if not example.segments:
            return None
        steps = grad_steps if grad_steps is not None else set(range(len(example.segments)))
        query = None if example.query_ids is None else example.query_ids.to(self.model.device)
        segments = [s.to(self.model.device) for s in example.segments]
        return compress_for_training(self.model, segments, steps, query, self.config.gradient_checkpointing, whole)

    def forward(
        self,
        example: TrainExample,
        grad_steps: set[int] | None = None,
        use_memory: bool = True,
        memory: Any = None,
        distractors: tuple[list[MemoryRows], list[MemoryRows]] | None = None,
        whole: bool = False,
    ) -> torch.Tensor:
        if use_memory and memory is None:
            memory = self.memory(example, grad_steps, whole)
        if use_memory and distractors is not None:
            memory = surround(memory, *distractors, self.model, example.query_ids)
        labels = example.labels[None].to(self.model.device)
        out = self.model(example.input_ids[None], memory=memory if use_memory else None, labels=labels)
        # In a qa run the scorer learns where answers read, not where a mixed-in continuation (lm_share) reads.
        continuation = self.config.lm_share > 0 and example.query_ids is None
        scores = getattr(memory, "token_scores", None) if self.config.salience_distill > 0 and not continuation else None
        if not self.model.training or not example.segments or (self.config.distill <= 0 and scores is None):
            return out.loss
        context_len = sum(s.shape[1] for s in example.segments)
        teacher_logits, attention = self.teacher(example, with_attention=scores is not None)
        loss = out.loss
        if self.config.distill > 0:
            teacher = teacher_logits[:, context_len:]
            loss = loss + self.config.distill * distillation_loss(out.logits, teacher, labels, self.config.distill_where_right)
        if scores is not None:
            target = attention_to_context(attention, labels, context_len, self.config.salience_temperature)
            loss = loss + self.config.salience_distill * salience_loss(scores, target)
        return loss

    @torch.no_grad()
    def teacher(self, example: TrainExample, with_attention: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The backbone reading the compressed text in its own window, then the decoder input: its logits and,
        when asked, its attention probabilities at the memory layers (eager attention for that one call)."""
        backbone = self.model.backbone
        context = torch.cat([s.to(self.model.device) for s in example.segments], dim=1)
        ids = torch.cat([context, example.input_ids[None].to(context)], dim=1)
        if not with_attention:
            return backbone(input_ids=ids).logits, None
        before = backbone.config._attn_implementation
        backbone.set_attn_implementation("eager")
        try:
            out = backbone(input_ids=ids, output_attentions=True)
        finally:
            backbone.set_attn_implementation(before)
        return out.logits, [out.attentions[i] for i in self.model.config.gca_layers]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, where_right: bool = False
) -> torch.Tensor:
    """Mean KL(teacher || student) at positions whose next token is labelled ([B, T, V] logits, [B, T] labels);
    with ``where_right`` only where the teacher's most likely token is the label (0 if it is right nowhere)."""
    predicts = labels[:, 1:] != IGNORE  # logits at t predict token t + 1
    if where_right:
        predicts = predicts & (teacher_logits[:, :-1].argmax(dim=-1) == labels[:, 1:])
        if not predicts.any():
            return student_logits.sum() * 0.0
    student = torch.log_softmax(student_logits[:, :-1][predicts].float(), dim=-1)
    teacher = torch.log_softmax(teacher_logits[:, :-1][predicts].float(), dim=-1)
    return torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")


def attention_to_context(
    attention: list[torch.Tensor], labels: torch.Tensor, context_len: int, temperature: float = 1.0
) -> torch.Tensor:
    """Where the teacher looks in the context *because* it is answering: [B, C], summing to 1 (or all 0).

    ``attention`` is [B, H, T_total, T_total] per layer; ``labels`` [B, T] cover the decoder input after the
    context. Salience is the mean attention (over layers, heads and rows) from the positions that predict a
    labelled token, minus the mean from the decoder input's other positions (the prompt), kept where
    positive. Many heads park on frequent tokens ("the", ".") whatever is being predicted; the difference
    removes them and keeps what the answer itself reads. Measured on pass keys in a held-out book: the
    plain mean's top-16 per 512 tokens held a whole key in 10% of segments, a scorer fitted to it in 0-20%;
    the difference held it in 67%, a scorer fitted to it in 93%. Without unlabelled positions the plain mean
    is used. The first token is left out (weight 0): it is the attention sink (Xiao et al., 2023), about 75%
    of the mass on SmolLM2, and the prompt has a sink of its own. ``temperature`` < 1 sharpens the target
    (mass^(1/T)) toward the tokens a top-K selection must get right.
    """
    predicts = labels[0, 1:] != IGNORE  # decoder position t predicts token t + 1
    rows = predicts.nonzero().squeeze(-1) + context_len  # rows in the full sequence
    others = (~predicts).nonzero().squeeze(-1) + context_len

    def mean_attention(at: torch.Tensor) -> torch.Tensor:
        return torch.stack([a[:, :, at, :context_len].float().mean(dim=(1, 2)) for a in attention]).mean(dim=0)

    mass = mean_attention(rows)
    if len(others):
        mass = (mass - mean_attention(others)).clamp(min=0.0)
    mass[:, 0] = 0.0
    mass = mass ** (1.0 / temperature)
    return mass / mass.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def salience_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(scores)) over the context's tokens: the scorer learns where the backbone looks."""
    log_q = torch.log_softmax(scores.float(), dim=-1)
    return (target * (torch.log(target.clamp(min=1e-12)) - log_q)).sum(dim=-1).mean()


def answer_matches(model: LCIRCModel, example: TrainExample, memory: Any, extra_tokens: int = 12) -> tuple[bool, bool]:
    """Greedy decoding from the memory: (reproduces the labelled answer token for token, contains its text).

    The second is the pass-key convention (the key appears in the reply): a reader distilled from the
    backbone often answers in the backbone's own words ("The 86643 is ..."), which is right but not exact.
    """
    labelled = (example.labels != IGNORE).nonzero()
    if not len(labelled):
        return False, False
    start, tokenizer = int(labelled[0]), model.tokenizer
    answer = example.labels[start:]
    answer = answer[answer != tokenizer.eos_token_id].cpu()
    out = model.generate(
        example.input_ids[None, :start], memory=memory, max_new_tokens=len(answer) + extra_tokens, do_sample=False
    )[0, start:].cpu()
    exact = out.numel() >= answer.numel() and bool(torch.equal(out[: len(answer)], answer))
    return exact, tokenizer.decode(answer).strip() in tokenizer.decode(out, skip_special_tokens=True)


def build_model(config: TrainConfig) -> LCIRCModel:
    if config.init_adapter:  # `adapter` fields then grow the saved adapter (e.g. query_dependent for the QD stage)
        return LCIRCModel.from_pretrained(
            config.init_adapter, backbone=config.backbone, is_trainable=True, config_overrides=config.adapter or None
        )
    return LCIRCModel.from_backbone(config.backbone, LCIRCConfig(**config.adapter))


def freeze_all_but(model: LCIRCModel, fragments: str) -> None:
    """Train only the adapter parameters whose names contain one of the comma-separated ``fragments``."""
    wanted = [f.strip() for f in fragments.split(",") if f.strip()]
    names = [name for name, _ in model.adapter.named_parameters()]
    if not any(f in name for f in wanted for name in names):
        raise LCIRCError(f"train_only={fragments!r} names no adapter parameter (e.g. {names[:3]})")
    for name, param in model.adapter.named_parameters():
        param.requires_grad_(any(f in name for f in wanted))


def lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "cosine":
            progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


class Trainer:
    def __init__(self, config: TrainConfig, model: LCIRCModel | None = None, accelerator: Accelerator | None = None) -> None:
        self.config = config
        # cpu=True on machines without an accelerator lets `accelerate launch` start gloo process groups.
        no_accelerator = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        self.accelerator = accelerator or Accelerator(
            cpu=no_accelerator,
            mixed_precision=config.mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        torch.manual_seed(config.seed)
        self.model = model or build_model(config)
        position_table = getattr(self.model.adapter.compressor, "segment_positions", None)
        if position_table is not None and config.max_train_segment_len > self.model.config.max_segment_len:
            raise LCIRCError(
                f"training segments of up to {config.max_train_segment_len} tokens need an adapter whose position table covers them "
                f"(adapter max_segment_len={self.model.config.max_segment_len})"
            )
        self.model.train()
        if config.train_only:
            freeze_all_but(self.model, config.train_only)
        self.module = self.core = LCIRCTrainingModule(self.model, config)
        if not self.model.trainable_parameters():
            raise LCIRCError("the adapter has no trainable parameters (load it with is_trainable=True)")
        self.optimizer = torch.optim.AdamW(self.parameter_groups(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.module, self.optimizer, self.scheduler = self.accelerator.prepare(self.module, self.optimizer, self.scheduler)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self.data = ExampleStream(self.model.tokenizer, config, "train", rank, world)
        self.bptt_rng = random.Random(f"{config.seed}-bptt-{rank}")
        self.whole_rng = random.Random(f"{config.seed}-whole-{rank}")
        self.own_words_rng = random.Random(f"{config.seed}-own-words-{rank}")
        self.pool = self.eval_pool = None
        if config.distractors and config.distractor_segments > 0:
            self.pool = DistractorPool(self.model, config.distractors, config.distractor_pool, config.seed)
            if config.eval_distractors:
                self.eval_pool = DistractorPool(self.model, config.eval_distractors, config.distractor_pool, config.seed + 1)
        # The most distractor segments now: grows with held-out accuracy under a gated curriculum.
        self.distractor_level = (
            min(config.distractor_start, config.distractor_segments) if config.curriculum_gate > 0 else config.distractor_segments
        )
        self.step = 0
        self.output = Path(config.output_dir)
        if config.resume:
            self._resume()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Gates (and sink logits) in their own group: at 0 they block every other gradient, so they get ``gate_lr_scale``."""
        gates, others = [], []
        for name, param in self.model.adapter.named_parameters():
            if param.requires_grad:
                (gates if name.endswith(("_gate", "_sink")) else others).append(param)
        groups = [{"params": others}]
        if gates:
            groups.append({"params": gates, "lr": self.config.lr * self.config.gate_lr_scale, "weight_decay": 0.0})
        return groups

    # ----- checkpoints --------------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """``checkpoint-N`` directories, oldest first (other names in the folder are not checkpoints)."""
        found = [p for p in self.output.glob("checkpoint-*") if CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self) -> Path:
        """Atomic: written to ``.tmp-checkpoint-N`` and renamed; only the main process writes."""
        final = self.output / f"checkpoint-{self.step}"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            tmp = self.output / f".tmp-checkpoint-{self.step}"
            self.model.save_pretrained(tmp / "adapter")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, tmp / "optimizer.pt")
            torch.save(torch.get_rng_state(), tmp / "torch_rng.pt")
            state = {
                "step": self.step,
                "data_position": self.data.position,
                **{name: _jsonable_state(getattr(self, name).getstate()) for name in PYTHON_RNGS},
                "distractor_level": self.distractor_level,
                "config": self.config.to_dict(),
            }
            (tmp / STATE_NAME).write_text(json.dumps(state, indent=2))
            if final.is_dir():  # saving a step again after falling back from a damaged checkpoint
                _discard(final)
            tmp.rename(final)
            for old in self.checkpoints()[: -self.config.keep_checkpoints]:
                _discard(old)
        self.accelerator.wait_for_everyone()
        return final

    def _resume(self) -> None:
        """Continue from the newest readable checkpoint; a damaged one is skipped with a warning."""
        found = self.checkpoints()
        for checkpoint in reversed(found):
            try:
                self._load_checkpoint(checkpoint)
            except UNREADABLE as err:
                warnings.warn(
                    f"checkpoint {checkpoint} is damaged and was skipped ({type(err).__name__}: {err}); "
                    "resuming from the one before it",
                    UserWarning,
                    stacklevel=3,
                )
                continue
            self.accelerator.print(f"resumed from {checkpoint} at step {self.step}")
            return
        if found:
            raise CorruptFileError(
                f"no checkpoint in {self.output} can be read ({', '.join(p.name for p in found)}); "
                "move them away or pass --resume=false to start again"
            )

    def _load_checkpoint(self, checkpoint: Path) -> None:
        """Parse every file before changing anything, so a bad file leaves the trainer as it was."""
        from ..model.adapter import load_adapter_weights

        state = json.loads((checkpoint / STATE_NAME).read_text())
        step, position = int(state["step"]), int(state["data_position"])
        if f"checkpoint-{step}" != checkpoint.name or position < 0:
            raise ValueError(f"{STATE_NAME} says step {step}, data position {position}")
        # every checkpoint has bptt_rng; those written before whole_rng and own_words_rng were saved lack them
        rng_states = {name: _tuple_state(state[name]) for name in PYTHON_RNGS if name == "bptt_rng" or name in state}
        for rng_state in rng_states.values():
            random.Random().setstate(rng_state)
        saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
        optimizer_state, scheduler_state = saved["optimizer"], saved["scheduler"]
        rng = torch.load(checkpoint / "torch_rng.pt", weights_only=True)
        if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
            raise TypeError("torch_rng.pt does not hold a torch RNG state")
        load_adapter_weights(self.model.adapter, checkpoint / "adapter")  # checks the file before loading it
        # A failure from here on is overwritten by the next checkpoint tried (or ends the run).
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(rng)
        for name, rng_state in rng_states.items():
            getattr(self, name).setstate(rng_state)
        self.data.skip(position)
        self.distractor_level = int(state.get("distractor_level", self.distractor_level))
        self.step = step

    # ----- the loop -----------------------------------------------------------------------------------

    def train(self) -> Path:
        """Train to ``config.steps``; returns the directory of the final adapter."""
        c = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            (self.output / "train_config.json").write_text(json.dumps(c.to_dict(), indent=2))
            for stale in [*self.output.glob(".tmp-checkpoint-*"), *self.output.glob(".old-checkpoint-*")]:
                shutil.rmtree(stale, ignore_errors=True)  # left by a run killed while writing or deleting a checkpoint
        log = (self.output / "metrics.jsonl").open("a") if self.accelerator.is_main_process else None
        bar = tqdm(total=c.steps, initial=self.step, desc=f"train {c.stage}", disable=not self.accelerator.is_local_main_process)
        while self.step < c.steps:
            started, tokens, losses = time.perf_counter(), 0, []
            for _ in range(c.grad_accum):
                example = self.next_example()
                grad_steps = steps_with_gradient(len(example.segments), c.bptt, c.bptt_window, self.bptt_rng)
                whole = c.whole_share > 0 and self.whole_rng.random() < c.whole_share
                with self.accelerator.autocast():
                    distractors = self.draw_distractors(whole, example.query_ids)
                    loss = self.module(example, grad_steps, distractors=distractors, whole=whole)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss is {loss.item()} at step {self.step}: lower lr (now {c.lr}) or enable max_grad_norm; "
                        f"the last good checkpoint is in {self.output}"
                    )
                if loss.requires_grad:  # with train_only, an example may not reach the trained parameters
                    self.accelerator.backward(loss / c.grad_accum)
                losses.append(loss.item())
                tokens += sum(s.numel() for s in example.segments) + example.input_ids.numel()
            if c.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(self.model.trainable_parameters(), c.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            bar.update(1)
            record: dict[str, Any] = {"step": self.step, "loss": sum(losses) / len(losses)}
            if c.eval_every and self.step % c.eval_every == 0:
                record.update(self.evaluate())
                self.advance_curriculum(record)
            if self.pool is not None:
                record["distractor_segments"] = self.distractor_level
            if log is not None and (self.step % c.log_every == 0 or "eval_loss" in record):
                record.update(
                    lr=self.scheduler.get_last_lr()[0],
                    tokens_per_s=tokens * self.accelerator.num_processes / (time.perf_counter() - started),
                    gates=self.gate_values(),
                )
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if self.step % c.save_every == 0 or self.step == c.steps:
                self.save_checkpoint()
        bar.close()
        if log is not None:
            log.close()
        final = self.output / "adapter"
        if self.accelerator.is_main_process:
            self.model.save_pretrained(final)
            plot_metrics(self.output)
        # Every rank records its weights' fingerprint: identical files prove DDP kept the replicas in sync.
        (self.output / f"fingerprint-rank{self.accelerator.process_index}.txt").write_text(self.model.adapter_fingerprint)
        self.accelerator.wait_for_everyone()
        return final

    def next_example(self) -> TrainExample:
        """The next training example; a share ``answers_in_own_words`` has its answer in the backbone's own words,
        and open questions are answered by the backbone reading the text (``in_teacher_words``)."""
        example, c = next(self.data), self.config
        if example.answer_by_teacher:
            return self._answered(example)
        if c.answers_in_own_words > 0 and self.own_words_rng.random() < c.answers_in_own_words:
            return in_own_words(self.model, example, from_answer=c.own_words_loss == "answer")
        return example

    def _answered(self, example: TrainExample) -> TrainExample:
        """``example`` with a label: an open question's is the backbone's own reply (``in_teacher_words``)."""
        return in_teacher_words(self.model, example) if example.answer_by_teacher else example

    def draw_distractors(
        self, whole: bool = False, query_ids: torch.Tensor | None = None
    ) -> tuple[list[MemoryRows], list[MemoryRows]] | None:
        """Distractor segments before and after the next example: how many, and the split, are uniform; with
        ``whole`` one of them is read whole, as an irrelevant segment the question picked would be (BM25's pick
        for the question with ``whole_distractor_candidates``).

        Seeded by the data position, so a resumed run draws what the uninterrupted one would have.
        """
        if self.pool is None:
            return None
        rng = random.Random(f"{self.config.seed}-distractors-{self.accelerator.process_index}-{self.data.position}")
        return self._split_draw(self.pool, rng, rng.randint(0, self.distractor_level), int(whole), query_ids)

    def advance_curriculum(self, metrics: dict[str, float]) -> None:
        """Double the most distractor segments once held-out answers reach ``curriculum_gate``."""
        gate = self.config.curriculum_gate
        if gate > 0 and metrics.get("eval_answer_contains", 0.0) >= gate:
            self.distractor_level = min(self.config.distractor_segments, 2 * self.distractor_level)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean held-out loss with the memory, without it, and with another example's memory.

        The third number is the control that tells memory *content* from the extra capacity the GCA
        blocks add whenever any memory is present: only ``eval_loss < eval_loss_other_memory`` shows the
        adapter reads what it compressed.
        """
        stream = ExampleStream(self.model.tokenizer, self.config, "eval")
        was_training = self.model.training
        self.model.eval()
        losses: dict[str, list[float]] = {"eval_loss": [], "eval_loss_no_memory": [], "eval_loss_other_memory": []}
        if self.config.stage == "qa":
            losses["eval_answer_exact"], losses["eval_answer_contains"] = [], []
            if self.config.whole_share > 0:
                losses.update(eval_whole_loss=[], eval_whole_answer_exact=[], eval_whole_answer_contains=[])
        previous = None
        for index in range(self.config.eval_examples):
            example = self._answered(next(stream))
            memory, distractors = self._among_held_out(self.core.memory(example), f"eval-{index}", example.query_ids)
            losses["eval_loss"].append(self.module(example, memory=memory).item())
            if "eval_answer_exact" in losses:
                exact, contains = answer_matches(self.model, example, memory)
                losses["eval_answer_exact"].append(float(exact))
                losses["eval_answer_contains"].append(float(contains))
            if "eval_whole_answer_contains" in losses:  # read as a question's whole segments are, with one whole distractor
                whole, _ = self._among_held_out(self.core.memory(example, whole=True), f"eval-{index}", example.query_ids, whole=1)
                losses["eval_whole_loss"].append(self.module(example, memory=whole).item())
                exact, contains = answer_matches(self.model, example, whole)
                losses["eval_whole_answer_exact"].append(float(exact))
                losses["eval_whole_answer_contains"].append(float(contains))
            losses["eval_loss_no_memory"].append(self.module(example, use_memory=False).item())
            if previous is not None:
                swapped = TrainExample(previous.segments, example.input_ids, example.labels, example.query_ids)
                losses["eval_loss_other_memory"].append(self.module(swapped, distractors=distractors).item())
            previous = example
        if self.config.lm_share > 0:
            losses.update(self._evaluate_language_modelling())
        self.model.train(was_training)
        return {name: sum(values) / len(values) for name, values in losses.items() if values}

    def _among_held_out(
        self, memory: MemoryRows, key: str, query_ids: torch.Tensor | None, whole: int = 0
    ) -> tuple[MemoryRows, tuple[list[MemoryRows], list[MemoryRows]] | None]:
        """``memory`` read among held-out distractor segments at the curriculum's current length (the first ``whole``
        of them whole), drawn by ``key`` so every variant of one example reads the same; and the draw."""
        if self.eval_pool is None:
            return memory, None
        drawn = self._split_draw(self.eval_pool, random.Random(f"{self.config.seed}-{key}"), self.distractor_level, whole, query_ids)
        return surround(memory, *drawn, self.model, query_ids), drawn

    def _split_draw(
        self, pool: DistractorPool, rng: random.Random, count: int, whole: int, query_ids: torch.Tensor | None
    ) -> tuple[list[MemoryRows], list[MemoryRows]]:
        """``count`` distractor segments (the first ``whole`` read whole), split at a uniform point into those before
        and after the example's text."""
        candidates = self.config.whole_distractor_candidates if whole and query_ids is not None else 0
        question = self.model.tokenizer.decode(query_ids.flatten().tolist()) if candidates else ""  # only BM25 reads it
        drawn = pool.draw(rng, count, whole, question, candidates)
        split = rng.randint(0, count)
        return drawn[:split], drawn[split:]

    def _evaluate_language_modelling(self, examples: int = 6) -> dict[str, list[float]]:
        """Held-out continuation of ``lm_data`` (every 20th document) with its text in memory and without: the
        memory must lower this loss, never raise it (the card's perplexity)."""
        config = dataclasses.replace(
            self.config, stage="lm", data=self.config.lm_data, eval_data="", lm_share=0.0, answers_in_own_words=0.0
        )
        stream = ExampleStream(self.model.tokenizer, config, "eval")
        losses: dict[str, list[float]] = {"eval_lm_loss": [], "eval_lm_loss_no_memory": []}
        for index in range(examples):
            example = next(stream)
            memory, _ = self._among_held_out(self.core.memory(example), f"eval-lm-{index}", None)
            losses["eval_lm_loss"].append(self.module(example, memory=memory).item())
            losses["eval_lm_loss_no_memory"].append(self.module(example, use_memory=False).item())
        return losses

    def gate_values(self) -> dict[str, float]:
        """tanh of every gate, the first thing to look at when memory is not being used."""
        return {
            name: round(math.tanh(p.item()), 5) for name, p in self.model.adapter.named_parameters() if name.endswith("_gate")
        }


def _discard(directory: Path) -> None:
    """Delete a checkpoint so that it is never seen half-deleted: one atomic rename first, then the files."""
    hidden = directory.with_name(f".old-{directory.name}")
    shutil.rmtree(hidden, ignore_errors=True)
    directory.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def _jsonable_state(state: Any) -> Any:
    return [_jsonable_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state
