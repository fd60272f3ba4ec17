"""Answer labels in the backbone's own words.

A reference answer is often bare ("71432"), but the product's reply is the backbone's: it opens with "The pass
key is" and only then needs the memory. A reader trained on bare answers never sees that step, and there the
whole reader (R13) copied the wrong neighbour ("The pass key is the pass key is ..."). So the label becomes
the reply the backbone writes when it reads the compressed text in its own window, cut after the clause
that holds the answer; when that reply misses the answer (SmolLM2-135M rambles about pass keys even with
the key in view), its opening words that restate the question, then the answer ("The pass key is 71432.").
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch

from ..model.lcirc_model import LCIRCModel
from .data import IGNORE, TrainExample

CLAUSE_END = re.compile(r"[.,;!?](?=\s|$)|\n")
SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def _word(text: str) -> str:
    return text.lower().strip("?.,!:;'\"()")


def _find(text: str, answer: str) -> re.Match[str] | None:
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text)


def reply_in_own_words(reply: str, question: str, answer: str) -> str | None:
    """The label text for ``answer`` in the words of the backbone's ``reply``; None when it has none to lend."""
    reply = reply.strip()
    found = _find(reply, answer)
    if found:
        end = CLAUSE_END.search(reply, found.end())  # what follows ("..., a small town in France.") is guessed
        return reply[: end.start() if end else len(reply)].strip() + "."
    asked = {_word(w) for w in question.split()}
    echo = []
    for word in reply.split():
        if (bare := _word(word)) not in asked or not bare:
            break
        echo.append(word)
    return " ".join([*echo, answer]) + "." if echo else None


@torch.no_grad()
def in_own_words(model: LCIRCModel, example: TrainExample, from_answer: bool = False, extra_tokens: int = 24) -> TrainExample:
    """``example`` with its answer label rewritten by :func:`reply_in_own_words` (unchanged without a question).

    With ``from_answer`` the reply's words before the answer are decoder input without loss: the reader learns
    to give the answer after them, and the reply's first word stays the reader's own choice.
    """
    labelled = (example.labels != IGNORE).nonzero()
    if example.query_ids is None or not example.segments or not len(labelled):
        return example
    tokenizer, start = model.tokenizer, int(labelled[0])
    answer_ids = example.labels[start:]
    answer = tokenizer.decode(answer_ids[answer_ids != tokenizer.eos_token_id]).strip()
    reply_text = backbone_reply(model, example, start, len(answer_ids) + extra_tokens)
    text = reply_in_own_words(reply_text, tokenizer.decode(example.query_ids[0]), answer)
    if text is None:
        return example
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=from_answer)
    reply = torch.tensor(encoded["input_ids"] + _eos(tokenizer), dtype=example.input_ids.dtype)
    labels = reply.clone()
    if from_answer:  # tokens that end before the answer (and the space before it) are the backbone's opening words
        answer_at = len(text[: _find(text, answer).start()].rstrip())
        opening = sum(1 for _, end in encoded["offset_mapping"] if end <= answer_at)
        labels[:opening] = IGNORE
    prompt = example.input_ids[:start]
    return replace(example, input_ids=torch.cat([prompt, reply]), labels=torch.cat([torch.full_like(prompt, IGNORE), labels]))


@torch.no_grad()
def in_teacher_words(model: LCIRCModel, example: TrainExample, max_new_tokens: int = 32) -> TrainExample:
    """An open question without a reference answer (``answer_by_teacher``), labelled with the first sentence the
    backbone replies when it reads the compressed text in its own window.

    Why: "Who is the captain?" has no salient sentence in the memory; the reader must learn to answer it as the
    backbone would with the text in view, not with whatever stands out in the memory (a pass key).
    """
    tokenizer, prompt = model.tokenizer, example.input_ids
    reply = backbone_reply(model, example, len(prompt), max_new_tokens).strip()
    end = SENTENCE_END.search(reply)
    text = reply[: end.end() if end else len(reply)].strip()
    ids = torch.tensor((tokenizer(text, add_special_tokens=False)["input_ids"] if text else []) + _eos(tokenizer), dtype=prompt.dtype)
    labels = torch.cat([torch.full_like(prompt, IGNORE), ids])
    return replace(example, input_ids=torch.cat([prompt, ids]), labels=labels, answer_by_teacher=False)


def backbone_reply(model: LCIRCModel, example: TrainExample, prompt_end: int, max_new_tokens: int) -> str:
    """The frozen backbone's greedy reply to ``example``'s prompt (its first ``prompt_end`` ids) with the
    example's segments in its window before it."""
    tokenizer = model.tokenizer
    ids = torch.cat([torch.cat(example.segments, dim=1), example.input_ids[None, :prompt_end]], dim=1).to(model.device)
    out = model.backbone.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )[0, ids.shape[1] :]
    return tokenizer.decode(out, skip_special_tokens=True)


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
