"""Training with the rehearsed examples in steps of their own against packed into the new examples'
steps (`InnerLoopConfig.mix_rehearsal`), on one learn's real examples.

    python benchmarks/mix_rehearsal.py [--model PATH] [--epochs 2] [--repeats 2]

The first `fresh-facts:eval` article's sentence-recall self-edit (written by the model) is the new
data; the second article's is the replay pool (8 per epoch) and the golden copy's anchors are
distilled by KL (16 per epoch), as `seal learn` does. Both modes train a fresh adapter from the
same seed in one process, alternating, and the script prints seconds per epoch, optimiser steps and
the tokens that carried loss of each, and their ratio. Absolute seconds depend on the machine's
load; the ratio is the result. What fewer, larger steps learn and keep is the continual
benchmark's question (`seal bench continual --strategy replay,replay:mix=on`), not this one's.
"""

from __future__ import annotations

import argparse
import dataclasses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from seal.core.config import LearnConfig
    from seal.core.inner_loop import Rehearsal, lora_adapter, train
    from seal.core.models import load_model
    from seal.domains.knowledge.data import select_passages
    from seal.domains.knowledge.self_edit import get_format, sample_self_edits, training_examples
    from seal.guard.anchors import golden_anchors, golden_teacher

    lm = load_model(args.model)
    recipe = LearnConfig()
    fmt = get_format(recipe.format)

    def examples(p):
        edits = sample_self_edits(lm, fmt, p.title, p.context, k=1, temperature=None, top_p=0.95, max_new_tokens=None, seed=0)
        return training_examples(lm, p.title, p.context, edits, include_passage=True)

    new, old = (examples(p) for p in select_passages("fresh-facts:eval", 2))
    pool = golden_anchors(lm)
    rehearsal = (Rehearsal(old, recipe.replay),
                 Rehearsal(pool, recipe.anchors, teacher=golden_teacher(lm, pool, recipe.anchor_topk, recipe.inner.max_seq_len)))
    print(f"{len(new)} new examples, {len(old)} replay pool ({recipe.replay}/epoch), "
          f"{len(pool)} anchors ({recipe.anchors}/epoch), {args.epochs} epochs")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for mix in (False, True):
            cfg = dataclasses.replace(recipe.inner, epochs=args.epochs, mix_rehearsal=mix)
            with lora_adapter(lm.model, cfg, seed=0) as pm:
                r = train(pm, lm.tokenizer, new, cfg, seed=0, rehearsal=rehearsal)
            seconds[mix].append(r.train_seconds / r.epochs)
            print(f"mix_rehearsal={mix!s:5}: {r.train_seconds / r.epochs:6.1f} s/epoch, {r.steps // r.epochs} steps/epoch, "
                  f"{r.n_tokens // r.epochs} loss tokens/epoch, new examples' loss {r.new_losses[-1]:.3f}")
    best = {k: min(v) for k, v in seconds.items()}
    print(f"best of {args.repeats}: separate steps {best[False]:.1f} s/epoch, packed {best[True]:.1f} s/epoch, "
          f"ratio {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    main()
