"""Training examples, streamed: documents are read and tokenized one at a time, never all in memory.

Stage 1 (``lm``): a document is cut into ``[segments to compress | window]`` pieces; the loss is on the
window. Stage 2 (``qa``): the context is compressed, the decoder sees the question's chat prompt and the
answer, and the loss is on the answer tokens only (the same prompt ``LCIRCModel.answer`` builds).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from ..data.documents import SUPPORTED_EXTENSIONS, read_document
from ..errors import LCIRCError
from ..model.prompting import build_prompt
from .config import TrainConfig

IGNORE = -100
# The shortest synthetic context: the needle sentences themselves need a haystack around them.
MIN_SYNTHETIC_TOKENS = 96


@dataclass
class TrainExample:
    """Token-id segments to compress, decoder input ids and labels (``-100`` = no loss), optional query.

    ``answer_by_teacher``: an open question whose input ids are the prompt alone; the trainer labels it with the
    backbone's own reply (``own_words.in_teacher_words``) before use.
    """

    segments: list[torch.Tensor]
    input_ids: torch.Tensor
    labels: torch.Tensor
    query_ids: torch.Tensor | None = None
    answer_by_teacher: bool = False


def iter_records(source: str) -> Iterator[dict[str, str]]:
    """Records (``{"text": ...}`` or QA fields) from a text file/folder, a JSONL file or a datasets folder."""
    path = Path(source)
    if not path.exists():
        raise LCIRCError(f"training data {source} does not exist")
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        from datasets import load_from_disk  # the `train` extra

        yield from load_from_disk(str(path))
        return
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file.suffix.lower() in SUPPORTED_EXTENSIONS:
            yield {"text": read_document(file, max_bytes=None).text}
        elif file.suffix == ".jsonl":
            with file.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)


def random_lengths(rng: random.Random, total: int, low: int, high: int) -> list[int]:
    """Random segment lengths in ``[low, high]`` whose sum is ``total`` (the last may be shorter)."""
    lengths = []
    while total > 0:
        length = min(total, rng.randint(low, high))
        lengths.append(length)
        total -= length
    return lengths


def split_segments(ids: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    return [piece[None] for piece in torch.split(ids, lengths)]


class ExampleStream:
    """A deterministic, endless stream of training examples for one process.

    Determinism: everything random comes from ``random.Random(seed)``; a small shuffle buffer mixes
    examples across documents. Sharding: process ``rank`` keeps every ``world``-th example, so any number
    of processes see disjoint data. ``position`` counts examples yielded, which is what a checkpoint
    stores; :meth:`skip` replays to a position on resume.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: TrainConfig,
        split: str = "train",
        rank: int = 0,
        world: int = 1,
        step_of: Callable[[int], int] | None = None,
        shuffle_buffer: int = 32,
    ) -> None:
        self.tokenizer, self.config, self.split = tokenizer, config, split
        self.rank, self.world, self.shuffle_buffer = rank, world, shuffle_buffer
        self.step_of = step_of or (lambda position: position // config.grad_accum)
        self.position = 0
        self._sentence_ends: set[int] | None = None
        self._decoy_rng = random.Random(f"{config.seed}-{split}-decoy")  # its own draws: the examples stay as without decoys
        self._iterator = self._generate()

    def __iter__(self) -> Iterator[TrainExample]:
        return self

    def __next__(self) -> TrainExample:
        example = next(self._iterator)
        self.position += 1
        return example

    def skip(self, count: int) -> None:
        for _ in range(count):
            next(self)

    def _source(self) -> tuple[str, bool]:
        """(data source, whether to hold out every 20th record for evaluation)."""
        if self.split == "eval" and self.config.eval_data:
            return self.config.eval_data, False
        return self.config.data, True

    def _records(self, step: Callable[[], int], source: str | None = None) -> Iterator[dict[str, str]]:
        """Records of ``source`` (by default the split's data) for this split, endlessly."""
        source, hold_out = (source, True) if source else self._source()
        if source.startswith("synthetic:"):
            seed = self.config.seed + (1 if self.split == "eval" else 0)
            yield from _synthetic_records(source.removeprefix("synthetic:"), seed, lambda rng: self._synthetic_chars(rng, step()))
            return
        for epoch in range(10**9):  # endless: epochs over the source
            found = False
            for index, record in enumerate(iter_records(source)):
                held_out = hold_out and index % 20 == 19
                if held_out == (self.split == "eval") or not hold_out:
                    found = True
                    yield record
            if not found:
                raise LCIRCError(f"no {self.split} records in {source}")

    def _generate(self) -> Iterator[TrainExample]:
        rng = random.Random(f"{self.config.seed}-{self.split}")
        buffer: list[TrainExample] = []
        produced = 0

        def current_step() -> int:  # read per example, so the curriculum advances inside long documents
            return self.step_of(produced // self.world)

        make = self._lm_examples if self.config.stage == "lm" else self._qa_examples
        examples = (example for record in self._records(current_step) for example in make(record, rng, current_step))
        if self.config.lm_share > 0 and self.split == "train":  # held-out language modelling: Trainer.evaluate
            lm_rng = random.Random(f"{self.config.seed}-{self.split}-lm")
            lm = (e for record in self._records(current_step, self.config.lm_data) for e in self._lm_examples(record, lm_rng, current_step))
            examples = _mixture(examples, lm, self.config.lm_share, lm_rng)
        for example in examples:
            buffer.append(example)
            if len(buffer) < self.shuffle_buffer:
                continue
            chosen = buffer.pop(rng.randrange(len(buffer)))
            produced += 1
            if (produced - 1) % self.world == self.rank:
                yield chosen

    def _max_segments(self, step: int) -> int:
        c = self.config
        if c.curriculum_steps <= 0 or self.split == "eval":  # held-out examples are always full length
            return c.max_segments
        grown = c.min_segments + (c.max_segments - c.min_segments) * min(1.0, step / c.curriculum_steps)
        return round(grown)

    def _synthetic_chars(self, rng: random.Random, step: int) -> int:
        """Context length of the next synthetic example: random, up to what the curriculum allows now."""
        c = self.config
        tokens = rng.randint(c.min_segments * c.min_train_segment_len, self._max_segments(step) * c.max_train_segment_len)
        return max(tokens, MIN_SYNTHETIC_TOKENS) * 4  # about 4 characters per token

    def _lm_examples(self, record: dict[str, str], rng: random.Random, step: Callable[[], int]) -> Iterator[TrainExample]:
        c = self.config
        ids = torch.tensor(self.tokenizer(record["text"], add_special_tokens=False)["input_ids"])
        if len(ids) < max(c.min_doc_tokens, c.min_train_segment_len + c.lm_context + c.loss_window):
            return
        position = rng.randrange(0, max(1, c.max_train_segment_len))
        while True:
            num_segments = rng.randint(c.min_segments, self._max_segments(step()))
            lengths = [rng.randint(c.min_train_segment_len, c.max_train_segment_len) for _ in range(num_segments)]
            prefix_end = position + sum(lengths)
            end = prefix_end + c.lm_context + c.loss_window
            if end > len(ids):
                return
            prefix, window = ids[position:prefix_end], ids[end - c.loss_window : end]
            if rng.random() < c.reconstruct:
                start = rng.randrange(max(1, len(prefix) - c.loss_window + 1))
                window = prefix[start : start + c.loss_window]
            if c.lm_decoy > 0 and self.split == "train" and self._decoy_rng.random() < c.lm_decoy:
                prefix = self._with_decoy(prefix, self._decoy_rng)
            context = ids[prefix_end : end - c.loss_window]  # read, not scored
            labels = torch.cat([torch.full_like(context, IGNORE), window])
            yield TrainExample(split_segments(prefix, lengths), torch.cat([context, window]), labels)
            position = end

    def _with_decoy(self, prefix: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """``prefix`` with an unasked pass-key sentence written over the text after one of its sentence ends.

        Written over rather than inserted, so the segment lengths and the text's join to the window stay as drawn.
        """
        from ..data import synthetic

        key = str(rng.randrange(10_000, 100_000))
        decoy = torch.tensor(self.tokenizer(" " + synthetic.decoy_sentence(key), add_special_tokens=False)["input_ids"])
        room = len(prefix) - len(decoy)
        if room < 0:
            return prefix
        if self._sentence_ends is None:  # token ids that end a sentence, found once per stream
            tokens = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            self._sentence_ends = {i for i, token in enumerate(tokens) if token and token.rstrip().endswith(".")}
        starts = [i + 1 for i, token in enumerate(prefix[:room].tolist()) if token in self._sentence_ends]
        start = rng.choice(starts) if starts else rng.randrange(room + 1)
        return torch.cat([prefix[:start], decoy, prefix[start + len(decoy) :]])

    def _qa_examples(self, record: dict[str, str], rng: random.Random, step: Callable[[], int]) -> Iterator[TrainExample]:
        c = self.config
        context_ids = torch.tensor(self.tokenizer(record["context"], add_special_tokens=False)["input_ids"])
        prompt = build_prompt(self.tokenizer, record["question"])
        by_teacher = not record["answer"]  # an open question: the trainer's teacher writes the answer
        answer = self.tokenizer(record["answer"], add_special_tokens=False)["input_ids"]
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None and not by_teacher else []
        input_ids = torch.tensor(prompt + answer + eos)
        labels = torch.tensor([IGNORE] * len(prompt) + answer + eos)
        query = torch.tensor(self.tokenizer(record["question"], add_special_tokens=False)["input_ids"])
        # Held-out texts are cut the way the product cuts them: full segments, then the rest.
        shortest = c.max_train_segment_len if self.split == "eval" else c.min_train_segment_len
        lengths = random_lengths(rng, len(context_ids), shortest, c.max_train_segment_len)
        yield TrainExample(split_segments(context_ids, lengths), input_ids, labels, query[None], answer_by_teacher=by_teacher)


def _mixture(first: Iterator[TrainExample], second: Iterator[TrainExample], share: float, rng: random.Random) -> Iterator[TrainExample]:
    """Examples of ``first``, each replaced by the next of ``second`` with probability ``share``."""
    while True:
        yield next(second) if rng.random() < share else next(first)


def _synthetic_records(spec: str, seed: int, length_chars: Callable[[random.Random], int]) -> Iterator[dict[str, str]]:
    """Endless QA records from ``TASK[:TEXT_PATH]``, or a mixture ``TASK[:TEXT],TASK[:TEXT],...`` drawn uniformly.

    ``TEXT_PATH`` is the haystack (or, for ``book_*`` tasks, the book) the task hides its evidence in;
    each record's context length comes from ``length_chars``, so a curriculum can grow it. ``TASK+decoy``
    also hides an unasked pass key in each context (``with_decoy_passkey``); ``open_question:BOOK`` asks about a
    recurring name with no reference answer (the trainer's teacher answers it).
    """
    from ..data import synthetic

    generators = {**synthetic.TASKS, "open_question": synthetic.open_question}  # open questions: for training only
    tasks = []
    for part in spec.split(","):
        name, _, text_path = part.strip().partition(":")
        task, _, modifier = name.partition("+")
        if task not in generators:
            raise LCIRCError(f"unknown synthetic task {task!r} in {spec!r}; choose from {', '.join(generators)}")
        if modifier not in ("", "decoy") or (modifier and task == "passkey"):
            raise LCIRCError(f"unknown modifier {name!r} in {spec!r}: '+decoy' goes with a task other than passkey")
        kwargs: dict[str, object] = {}
        if text_path:
            kwargs["haystack" if task == "passkey" or task.startswith("niah") else "book"] = synthetic.load_haystack(text_path)
        tasks.append((generators[task], kwargs, modifier == "decoy"))
    rng = random.Random(f"synthetic-{seed}")
    for index in itertools.count():
        generate, kwargs, decoy = tasks[rng.randrange(len(tasks))]
        example_seed = synthetic.derive_seed(seed, index)
        example = generate(example_seed, length_chars=length_chars(rng), **kwargs)
        if decoy:
            example = synthetic.with_decoy_passkey(example, synthetic.derive_seed(example_seed, "decoy"))
        yield {"context": example.context, "question": example.question, "answer": example.answer}
