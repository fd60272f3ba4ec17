"""Distractor segments: cached plain-text segments read around a training example, and the gated length curriculum."""

from __future__ import annotations

import json
import random

import pytest
import torch
from support import SAMPLE_BOOK

from lcirc_plugins.errors import ConfigError
from lcirc_plugins.model.passages import words
from lcirc_plugins.training import TrainConfig, Trainer, compress_for_training
from lcirc_plugins.training.distractors import DistractorPool, surround

SELECTING = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 8, "slot_selection": True}


def _config(tmp_path, **overrides) -> TrainConfig:
    base = {
        "stage": "qa",
        "data": f"synthetic:passkey:{SAMPLE_BOOK}",
        "distractors": str(SAMPLE_BOOK),
        "distractor_pool": 6,
        "distractor_segments": 4,
        "output_dir": str(tmp_path),
        "steps": 4,
        "lr": 1e-3,
        "bptt": "full",
        "min_train_segment_len": 32,
        "max_train_segment_len": 32,
        "min_segments": 1,
        "max_segments": 2,
        "eval_every": 0,
        "save_every": 2,
        "seed": 3,
    }
    return TrainConfig(**{**base, **overrides})


def test_surrounded_memory_equals_compressing_the_whole_text(make_lcirc):
    model = make_lcirc("llama", **SELECTING)
    model.eval()
    pool = DistractorPool(model, str(SAMPLE_BOOK), size=5, seed=0)
    before, after = [pool.slots(0), pool.slots(1)], [pool.slots(4)]
    own = [torch.randint(5, 1000, (1, 32)), torch.randint(5, 1000, (1, 20))]
    with torch.no_grad():
        rows = surround(compress_for_training(model, own, set()), before, after)
        plain = [pool.segments[i][None] for i in (0, 1, 4)]
        reference = compress_for_training(model, [*plain[:2], *own, plain[2]], set())
    assert rows.span == reference.span == 32 * 3 + 52
    assert torch.equal(rows.features, reference.features)
    assert torch.equal(rows.positions, reference.positions)
    prompt = torch.randint(5, 1000, (1, 12))
    assert torch.equal(model(prompt, memory=rows).logits, model(prompt, memory=reference).logits)


def test_a_qd_surrounded_memory_scores_every_row_as_the_whole_text(make_lcirc):
    model = make_lcirc("llama", **SELECTING, query_dependent=True)
    model.eval()
    with torch.no_grad():  # open the QD mixer and scorer, which start closed
        model.adapter.compressor.relevance.weight.normal_()
        model.adapter.compressor.query_mixer.attn_gate.fill_(1.0)
    pool = DistractorPool(model, str(SAMPLE_BOOK), size=3, seed=0)
    own, query = [torch.randint(5, 1000, (1, 32))], torch.randint(5, 1000, (1, 6))
    with torch.no_grad():
        rows = surround(compress_for_training(model, own, set(), query), [pool.slots(0)], [pool.slots(2)], model, query)
        plain = [pool.segments[i][None] for i in (0, 2)]
        reference = compress_for_training(model, [plain[0], *own, plain[1]], set(), query)
    assert rows.bias is not None and rows.bias.abs().sum() > 0
    torch.testing.assert_close(rows.bias, reference.bias)
    other = torch.randint(5, 1000, (1, 6))
    assert not torch.allclose(surround(rows, [], [], model, other).bias, rows.bias), "the bias follows the question"


def test_distractors_need_independently_compressed_segments(make_lcirc):
    with pytest.raises(ConfigError, match="compressed independently"):
        DistractorPool(make_lcirc("llama", reader="layer", slot_correction=True), str(SAMPLE_BOOK), 4, 0)
    with pytest.raises(ConfigError, match="curriculum_gate"):
        TrainConfig(curriculum_gate=1.5)


def test_training_reads_distractors_and_the_gated_curriculum_doubles_them(make_lcirc, tmp_path):
    model = make_lcirc("llama", **SELECTING)
    config = _config(
        tmp_path, curriculum_gate=0.5, distractor_segments=5, eval_distractors=str(SAMPLE_BOOK), eval_every=4, eval_examples=2
    )
    trainer = Trainer(config, model=model)
    assert trainer.distractor_level == 1
    trainer.advance_curriculum({"eval_answer_contains": 0.4})
    assert trainer.distractor_level == 1, "below the gate the length stays"
    trainer.advance_curriculum({"eval_answer_contains": 0.5})
    trainer.advance_curriculum({"eval_answer_contains": 0.9})
    assert trainer.distractor_level == 4
    trainer.advance_curriculum({"eval_answer_contains": 1.0})
    assert trainer.distractor_level == 5, "capped at distractor_segments"
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["distractor_segments"] for r in records] == [5] * 4
    assert 0 < len(trainer.pool.cache) <= 6, "distractors are compressed once and reused"
    assert len(trainer.eval_pool.cache) >= 5, "held-out examples read the curriculum's current length"
    assert "eval_answer_contains" in records[-1]
    resumed = Trainer(_config(tmp_path, curriculum_gate=0.5, steps=6), model=make_lcirc("llama", **SELECTING))
    assert resumed.step == 4 and resumed.distractor_level == 5, "the curriculum's length is restored on resume"


def test_distractor_draws_follow_the_data_position(make_lcirc, tmp_path):
    trainer = Trainer(_config(tmp_path), model=make_lcirc("llama", **SELECTING))

    def drawn() -> tuple[tuple[int, ...], tuple[int, ...]]:
        before, after = trainer.draw_distractors()
        return tuple(id(s.features) for s in before), tuple(id(s.features) for s in after)

    assert drawn() == drawn(), "the same data position draws the same distractors (so a resumed run repeats them)"
    seen = {drawn()}
    for _ in range(8):
        next(trainer.data)
        seen.add(drawn())
    assert len(seen) > 3, "every example draws its own"


def test_a_whole_example_reads_every_token_among_slotted_and_whole_distractors(make_lcirc, tmp_path):
    model = make_lcirc("llama", **SELECTING)
    pool = DistractorPool(model, str(SAMPLE_BOOK), size=4, seed=0)
    own = [torch.randint(5, 1000, (1, 32)), torch.randint(5, 1000, (1, 20))]
    with torch.no_grad():
        rows = compress_for_training(model, own, set(), whole=True)
        reference = torch.cat([model.segment_states(ids) for ids in own], dim=1)
        drawn = pool.draw(random.Random(0), 3, whole=1)
    assert torch.equal(rows.features, reference) and rows.token_scores is None
    assert torch.equal(rows.positions, torch.arange(-52, 0, dtype=torch.float32)[None])
    assert [d.features.shape[1] for d in drawn] == [32, 4, 4], "the first drawn segment whole, the others as slots"
    assert 0 not in pool.cache or pool.cache[0].features.shape[1] == 4, "whole segments are never cached"

    config = _config(tmp_path, whole_share=1.0, whole_distractor_candidates=4, eval_distractors=str(SAMPLE_BOOK), eval_every=2, eval_examples=2, steps=2)
    trainer = Trainer(config, model=model)
    trainer.train()
    assert trainer.pool.texts is not None and trainer.eval_pool.texts is not None, "whole distractors were chosen by BM25"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"eval_whole_loss", "eval_whole_answer_contains"} <= set(records[-1])
    with pytest.raises(ConfigError, match="whole_share"):
        TrainConfig(whole_share=1.5)


def test_a_whole_distractor_can_be_the_questions_best_bm25_match(make_lcirc):
    model = make_lcirc("llama", **SELECTING)
    pool = DistractorPool(model, str(SAMPLE_BOOK), size=6, seed=0)
    vocabularies = [set(words(model.tokenizer.decode(ids.tolist()))) for ids in pool.segments]
    target, word = next((i, w) for i, v in enumerate(vocabularies) for w in sorted(v) if sum(w in u for u in vocabularies) == 1)
    with torch.no_grad():
        for seed in range(3):  # whatever else is drawn, the whole one is the segment that holds the word
            drawn = pool.draw(random.Random(seed), 3, whole=1, question=f"What about the {word}?", candidates=len(pool))
            assert torch.equal(drawn[0].features, pool.whole(target).features), f"segment {target} holds {word!r}"
        plain = pool.draw(random.Random(1), 3, whole=1)
    assert [d.features.shape[1] for d in plain] == [32, 4, 4], "without candidates the whole one is any segment"
    with pytest.raises(ConfigError, match="whole_distractor_candidates"):
        TrainConfig(whole_distractor_candidates=-1)


def test_a_resumed_run_draws_whole_and_own_words_examples_as_one_run_would(make_lcirc, tmp_path):
    trainer = Trainer(_config(tmp_path, whole_share=0.5), model=make_lcirc("llama", **SELECTING))
    for rng in (trainer.bptt_rng, trainer.whole_rng, trainer.own_words_rng):
        rng.random()  # as training steps would
    trainer.save_checkpoint()
    expected = [rng.random() for rng in (trainer.bptt_rng, trainer.whole_rng, trainer.own_words_rng)]
    resumed = Trainer(_config(tmp_path, whole_share=0.5), model=make_lcirc("llama", **SELECTING))
    assert [rng.random() for rng in (resumed.bptt_rng, resumed.whole_rng, resumed.own_words_rng)] == expected
