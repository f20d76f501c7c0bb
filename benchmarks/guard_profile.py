"""Seconds each part of the forgetting guard (and the golden teacher) takes on a store's head.

    python benchmarks/guard_profile.py STORE [--model PATH]

Each part runs once, in the order the guard runs them, on the head's adapters: the guard's
general questions, the head's own probes, the canary's multiple-choice items, held-out
perplexity; then the golden copy's top-64 teacher over the anchors (computed, not read from the
cache). Absolute seconds depend on the machine and its load: compare parts within one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--model", default=None, help="a local HF model folder (default: the embedded model)")
    args = ap.parse_args()

    from seal.core.inner_loop import teacher_topk, tokenize_example
    from seal.core.models import load_model
    from seal.core.store import KnowledgeStore
    from seal.guard import check
    from seal.guard.anchors import golden_anchors
    from seal.guard.canary import perplexity, reasoning_accuracy
    from seal.guard.general import ask_general

    store = KnowledgeStore(args.store)
    lm = load_model(args.model)
    adapters = store.adapter_dirs(store.head)
    own = [check.Probe(**p) for p in store.manifest(store.head).get("probes", [])]
    questions = check.load_guard_questions()
    check.golden_reference(lm, questions)  # cached after the first call: not part of a learn

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        print(f"{name:<40} {time.perf_counter() - t0:7.1f} s", flush=True)

    print(f"head v{store.head}: {len(adapters)} adapter(s)")
    timed(f"guard: {len(questions)} general questions", lambda: ask_general(lm, questions, adapters=adapters))
    timed(f"guard: {len(own)} own probes", lambda: check.ask_probes(lm, own, adapters))
    timed("guard: canary items", lambda: reasoning_accuracy(lm, adapters=adapters))
    timed("guard: held-out perplexity", lambda: perplexity(lm, adapters=adapters))
    pool = golden_anchors(lm)
    ids = [tokenize_example(lm.tokenizer, e, 1024)[0] for e in pool]
    timed(f"teacher: top-64 over {len(pool)} anchors", lambda: teacher_topk(lm.model, ids, 64))


if __name__ == "__main__":
    main()
