"""The guard's generative checks answered in batches of 16 against one batch of up to 64, paired.

    python benchmarks/guard_batch.py STORE [--repeats 3] [--model PATH]

On the head of STORE (its adapters named to the backend, as the guard does), the guard's 40
general questions and the head's own retention probes are answered with each batch size in turn,
`--repeats` times, alternating so that a load that comes and goes falls on both alike. Prints the
best seconds of each, their ratio, and how many answers differ between the two (greedy decoding of
left-padded batches of another size can round differently; the guard grades answers, so a
differing answer matters only where it flips a grade, also counted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from seal.core.models import load_model
    from seal.core.store import KnowledgeStore
    from seal.guard import check
    from seal.guard.general import ask_general

    lm = load_model(args.model)
    store = KnowledgeStore(args.store)
    head = store.adapter_dirs(store.head)
    probes = check.chain_probes([store.manifest(v) for v in store.chain(store.head)])
    questions = check.load_guard_questions()
    best: dict[int, float] = {}
    answers: dict[int, list] = {}
    for _ in range(args.repeats):
        for batch in (16, 64):
            t = time.perf_counter()
            general = ask_general(lm, questions, adapters=head, batch_size=batch)
            saved, check.GUARD_BATCH = check.GUARD_BATCH, batch
            try:
                flags = check.ask_probes(lm, probes, head)
            finally:
                check.GUARD_BATCH = saved
            best[batch] = min(best.get(batch, float("inf")), time.perf_counter() - t)
            answers[batch] = [(a["prediction"], a["correct"]) for a in general] + [(None, f) for f in flags]
    differ = sum(a[0] != b[0] for a, b in zip(answers[16], answers[64]))
    flipped = sum(a[1] != b[1] for a, b in zip(answers[16], answers[64]))
    print(f"{len(questions)} general questions + {len(probes)} probes on head v{store.head}")
    print(f"batch 16: {best[16]:.2f} s   batch 64: {best[64]:.2f} s   ratio {best[16] / best[64]:.2f}x")
    print(f"answers that differ: {differ} of {len(questions)} general; grades that differ: {flipped} of {len(answers[16])}")


if __name__ == "__main__":
    main()
