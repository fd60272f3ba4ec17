"""Does an adapter answer questions the memory's pass key has nothing to do with by copying the key?

    .venv/bin/python experiments/off_topic_probe.py lcirc_plugins/adapters/default runs/candidate-9

The README's example (Treasure Island chapters 1-4 with a pass key hidden halfway) asked four questions about the
story and the pass key, each on the QD path and without the question. Why (docs/TRAINING_FINDINGS.md, "Fewer
memory layers"): every training example's answer is in its memory, so a run can learn to copy the most salient row
for any question, and neither the held-out evaluation nor the pass-key probes ask anything the memory does not hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lcirc_plugins import LCIRCModel

SAMPLE_BOOK = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sample-book.txt"
KEY = "48213"
OFF_TOPIC = ["Who is the captain?", "What is the name of the inn?", "Who is Black Dog?", "What did the captain keep in his sea-chest?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapters", nargs="+")
    args = parser.parse_args()
    book = SAMPLE_BOOK.read_text(encoding="utf-8-sig")
    middle = book.index(". ", len(book) // 2) + 2
    book = book[:middle] + f"The pass key is {KEY}. Remember it. {KEY} is the pass key. " + book[middle:]
    for adapter in args.adapters:
        model = LCIRCModel.from_pretrained(adapter)
        memory = model.compress(book)
        leaks, found = 0, 0
        for question in [*OFF_TOPIC, "What is the pass key?"]:
            for qd in (True, False):
                reply = model.generate_text(model.prepare_answer(question, memory, max_new_tokens=24, query_dependent=qd), max_new_tokens=24)[0]
                if question in OFF_TOPIC:
                    leaks += KEY in reply
                else:
                    found += KEY in reply
                print(f"{adapter} {'QD' if qd else '--'} {question} -> {reply!r}", flush=True)
        print(f"{adapter}: the key in {leaks} of {2 * len(OFF_TOPIC)} off-topic answers; found when asked {found} of 2", flush=True)
        model.injector.detach()


if __name__ == "__main__":
    main()
