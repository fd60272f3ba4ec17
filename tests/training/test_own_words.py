"""Answer labels in the backbone's own words (TrainConfig.answers_in_own_words)."""

from __future__ import annotations

import re

import pytest
import torch

from lcirc_plugins.errors import ConfigError
from lcirc_plugins.model.prompting import build_prompt
from lcirc_plugins.training import TrainConfig
from lcirc_plugins.training.data import IGNORE, TrainExample
from lcirc_plugins.training.own_words import in_own_words, in_teacher_words, reply_in_own_words


def test_a_reply_that_holds_the_answer_is_cut_after_its_clause():
    reply = "The map seller was born in Quillmoor, a small town in France."
    assert reply_in_own_words(reply, "In which town was the map seller born?", "Quillmoor") == "The map seller was born in Quillmoor."
    assert reply_in_own_words("He owned 38 umbrellas", "How many?", "38") == "He owned 38 umbrellas."


def test_a_reply_that_misses_the_answer_lends_its_opening_words_that_restate_the_question():
    reply = "The pass key is a special key that is used to unlock the pass key."
    assert reply_in_own_words(reply, "What is the pass key?", "71432") == "The pass key is 71432."


def test_a_reply_with_no_words_of_the_question_lends_nothing():
    assert reply_in_own_words("Unlocking requires a code.", "What is the pass key?", "71432") is None


def test_the_answer_must_stand_as_a_whole_word_in_the_reply():
    # "38" inside "1938" is not the answer; the reply restates nothing, so the reference stays.
    assert reply_in_own_words("It happened in 1938.", "How many umbrellas?", "38") is None


def _example(model, question: str, answer: str) -> TrainExample:
    tokenizer = model.tokenizer
    prompt = build_prompt(tokenizer, question)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    query = torch.tensor(tokenizer(question, add_special_tokens=False)["input_ids"])
    segments = [torch.randint(5, 1000, (1, 24), generator=torch.Generator().manual_seed(0))]
    return TrainExample(segments, torch.tensor(prompt + answer_ids), torch.tensor([IGNORE] * len(prompt) + answer_ids), query[None])


def test_the_label_becomes_the_backbones_reply_and_the_prompt_is_kept(make_lcirc):
    model = make_lcirc("llama")
    tokenizer = model.tokenizer
    example = _example(model, "What is the pass key?", "71432")
    start = int((example.labels != IGNORE).nonzero()[0])
    # The reply the backbone writes reading the text in its window; asked with that reply as the question, every
    # opening word restates it, so the label must be that reply followed by the answer.
    ids = torch.cat([example.segments[0], example.input_ids[None, :start]], dim=1)
    reply_ids = model.backbone.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=False)[0, ids.shape[1] :]
    reply = tokenizer.decode(reply_ids, skip_special_tokens=True)
    echoing = TrainExample(example.segments, example.input_ids, example.labels, torch.tensor(tokenizer(reply)["input_ids"])[None])
    text = reply_in_own_words(reply, reply, "71432")
    assert text is not None and text.endswith("71432.")

    restyled = in_own_words(model, echoing)
    expected = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert torch.equal(restyled.input_ids[:start], example.input_ids[:start])
    assert restyled.labels[:start].eq(IGNORE).all()
    assert restyled.labels[start:].tolist() == restyled.input_ids[start:].tolist() == expected
    assert restyled.segments is example.segments
    # From the answer on: the same decoder input, the loss only on the answer and what follows it.
    answer_only = in_own_words(model, echoing, from_answer=True)
    assert torch.equal(answer_only.input_ids, restyled.input_ids)
    labelled = answer_only.labels[answer_only.labels != IGNORE]
    assert tokenizer.decode(labelled) == f" 71432.{tokenizer.eos_token}"  # the space before the answer is its first step


def test_examples_without_a_question_or_with_nothing_to_lend_are_unchanged(make_lcirc):
    model = make_lcirc("llama")
    example = _example(model, "What is the pass key?", "71432")
    continuation = TrainExample(example.segments, example.input_ids, example.input_ids.clone())
    assert in_own_words(model, continuation) is continuation
    # A question of words the random backbone will not write: its reply restates none of them.
    lone = _example(model, "Zyxwv?", "71432")
    assert in_own_words(model, lone) is lone


@pytest.mark.parametrize(
    "fields", [{"stage": "lm", "answers_in_own_words": 1.0}, {"answers_in_own_words": 1.5}, {"own_words_loss": "prefix"}]
)
def test_own_words_config_errors(tmp_path, fields):
    with pytest.raises(ConfigError, match="answers_in_own_words|own_words_loss"):
        TrainConfig(**{"stage": "qa", "data": "x", "output_dir": str(tmp_path), **fields})


def test_the_trainer_labels_pass_keys_as_smollm2_words_them(smollm2, tmp_path):
    """SmolLM2 rambles about a pass key it can see, but opens with "The pass key is": the label carries on from there."""
    from support import SAMPLE_BOOK

    from lcirc_plugins import LCIRCConfig, LCIRCModel
    from lcirc_plugins.training import Trainer

    backbone, tokenizer = smollm2
    model = LCIRCModel(backbone, tokenizer, LCIRCConfig(), backbone_name="smollm2-135m-instruct")
    base = {"stage": "qa", "data": f"synthetic:passkey:{SAMPLE_BOOK}", "steps": 1, "eval_every": 0, "seed": 5}
    try:
        bare = Trainer(TrainConfig(**base, output_dir=str(tmp_path / "bare")), model=model).next_example()
        own = Trainer(TrainConfig(**base, output_dir=str(tmp_path / "own"), answers_in_own_words=1.0), model=model).next_example()
    finally:
        model.injector.detach()
        backbone.eval()
    key = tokenizer.decode(bare.labels[bare.labels != IGNORE], skip_special_tokens=True).strip()
    assert key.isdigit() and len(key) == 5
    assert tokenizer.decode(own.labels[own.labels != IGNORE]) == f"The pass key is {key}.{tokenizer.eos_token}"
    assert all(torch.equal(a, b) for a, b in zip(own.segments, bare.segments))


def test_an_open_question_is_answered_by_the_backbone_reading_the_text(smollm2, tmp_path):
    """"Who is Jim?" has no reference answer: the label is the first sentence SmolLM2 replies with the text in view."""
    from support import SAMPLE_BOOK

    from lcirc_plugins import LCIRCConfig, LCIRCModel
    from lcirc_plugins.training import Trainer

    backbone, tokenizer = smollm2
    model = LCIRCModel(backbone, tokenizer, LCIRCConfig(), backbone_name="smollm2-135m-instruct")
    config = TrainConfig(stage="qa", data=f"synthetic:open_question+decoy:{SAMPLE_BOOK}", steps=1, eval_every=0, seed=5, output_dir=str(tmp_path))
    try:
        trainer = Trainer(config, model=model)
        open_question = next(trainer.data)
        labelled = in_teacher_words(model, open_question)
    finally:
        model.injector.detach()
        backbone.eval()
    assert open_question.answer_by_teacher and (open_question.labels == IGNORE).all(), "no reference answer to learn"
    context = torch.cat(open_question.segments, dim=1)
    ids = torch.cat([context, open_question.input_ids[None]], dim=1)
    reply_ids = backbone.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False)[0, ids.shape[1] :]
    first_sentence = re.match(r"\s*(.*?(?:[.!?](?=\s|$)|\n|$))", tokenizer.decode(reply_ids, skip_special_tokens=True), re.DOTALL).group(1).strip()
    prompt_length = len(open_question.input_ids)
    assert torch.equal(labelled.input_ids[:prompt_length], open_question.input_ids) and (labelled.labels[:prompt_length] == IGNORE).all()
    assert tokenizer.decode(labelled.labels[prompt_length:]) == first_sentence + tokenizer.eos_token
    assert not labelled.answer_by_teacher and "The pass key is" in tokenizer.decode(context[0])
