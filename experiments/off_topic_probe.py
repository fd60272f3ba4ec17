"""Does an adapter answer questions the memory's pass key has nothing to do with by copying the key?

    .venv/bin/python experiments/off_topic_probe.py lcirc_plugins/adapters/default runs/candidate-9
    .venv/bin/python experiments/off_topic_probe.py ADAPTER --decoys 10   # + held-out facts and needles with a decoy key

The README's example (Treasure Island chapters 1-4 with a pass key hidden halfway) asked four questions about the
story (ten since R29) and the pass key, each on the QD path and without the question. Why (docs/TRAINING_FINDINGS.md, "Fewer
memory layers"): every training example's answer is in its memory, so a run can learn to copy the most salient row
for any question, and neither the held-out evaluation nor the pass-key probes ask anything the memory does not hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lcirc_plugins import LCIRCModel
from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.data.synthetic import book_facts, derive_seed, load_haystack, niah_single, with_decoy_passkey

SAMPLE_BOOK = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sample-book.txt"
KEY = "48213"
OFF_TOPIC = ["Who is the captain?", "What is the name of the inn?", "Who is Black Dog?", "What did the captain keep in his sea-chest?"]
# Six more since R29 (the first four alone gave counts of 8 answers, too few to tell two adapters apart):
MORE_OFF_TOPIC = [
    "Who is Dr. Livesey?",
    "What song does the captain sing?",
    "What does the captain drink?",
    "Who tells the story?",
    "What does the captain pay the boy to watch for?",
    "How does the captain treat the people at the inn?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapters", nargs="+")
    parser.add_argument("--decoys", type=int, default=0, help="also N invented facts and N needles at 8K in Treasure Island, each with an unasked pass key")
    args = parser.parse_args()
    book = SAMPLE_BOOK.read_text(encoding="utf-8-sig")
    middle = book.index(". ", len(book) // 2) + 2
    book = book[:middle] + f"The pass key is {KEY}. Remember it. {KEY} is the pass key. " + book[middle:]
    for adapter in args.adapters:
        model = LCIRCModel.from_pretrained(adapter)
        memory = model.compress(book)
        leaks, more_leaks, qd_leaks, found = 0, 0, 0, 0
        for question in [*OFF_TOPIC, *MORE_OFF_TOPIC, "What is the pass key?"]:
            for qd in (True, False):
                reply = model.generate_text(model.prepare_answer(question, memory, max_new_tokens=24, query_dependent=qd), max_new_tokens=24)[0]
                leaked = KEY in reply
                if question in OFF_TOPIC:
                    leaks += leaked
                elif question in MORE_OFF_TOPIC:
                    more_leaks += leaked
                else:
                    found += leaked
                qd_leaks += leaked and qd and question != "What is the pass key?"
                print(f"{adapter} {'QD' if qd else '--'} {question} -> {reply!r}", flush=True)
        print(f"{adapter}: the key in {leaks} of {2 * len(OFF_TOPIC)} off-topic answers; found when asked {found} of 2", flush=True)
        total = 2 * (len(OFF_TOPIC) + len(MORE_OFF_TOPIC))
        print(f"{adapter}: with the six later questions, the key in {leaks + more_leaks} of {total} ({qd_leaks} on the QD path)", flush=True)
        if args.decoys:
            decoy_examples(model, adapter, args.decoys)
        model.injector.detach()


def decoy_examples(model: LCIRCModel, adapter: str, n: int) -> None:
    """Held-out facts and needles (seeds from 20, as the layer probe's) with a decoy key: right answers and leaks."""
    text = load_haystack(shared_data_dir() / "books" / "stevenson-treasure-island.txt")
    tok = model.tokenizer
    right, leaked = {True: 0, False: 0}, {True: 0, False: 0}
    for i in range(n):
        for task, source in ((book_facts, "book"), (niah_single, "haystack")):
            seed = derive_seed(2026, 20 + i)
            example = with_decoy_passkey(task(seed, num_tokens=8192, tokenizer=tok, **{source: text}), seed)
            key = example.metadata["decoy"].split()[4].rstrip(".")
            memory = model.compress(example.context)
            for qd in (True, False):
                prepared = model.prepare_answer(example.question, memory, max_new_tokens=24, query_dependent=qd)
                reply = model.generate_text(prepared, max_new_tokens=24)[0]
                right[qd] += any(a.lower() in reply.lower() for a in example.answers)
                leaked[qd] += key in reply
                print(f"{adapter} {'QD' if qd else '--'} {example.task} {example.question} [{example.answer}; decoy {key}] -> {reply!r}", flush=True)
    for qd in (True, False):
        print(f"{adapter} {'QD-LCIRC' if qd else 'LCIRC'}: right {right[qd]} of {2 * n}, the decoy key in {leaked[qd]}", flush=True)


if __name__ == "__main__":
    main()
