"""What each epoch of the default learn buys and costs: recall of the training examples, the
article's closed-book accuracy and the general questions kept, measured after every epoch.

    python benchmarks/epoch_curve.py --n 4 --out runs/epoch_curve.jsonl [--epochs 10] [--set KEY=V ...]

Each of the first N `fresh-facts:eval` articles is learned alone (a fresh store, the guard off, so
the training is exactly `seal learn`'s first learn of it) with the default recipe; at the end of
every epoch, without touching the optimiser or the learning-rate schedule, the script records:
the share of training examples whose greedy decoding reproduces their completion (question-sentence
pairs and the raw passage apart), the article's questions answered closed-book, and of the guard's
general questions the golden copy answers, the share still answered. One JSON line per
(article, epoch), and a table of the means per epoch on stdout. `--set` changes a LearnConfig or
InnerLoopConfig field (e.g. `--set inner.epochs=4`, `--set anchors=8`) to measure another recipe.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _parse_set(items: list[str]):
    out = []
    for item in items:
        key, _, value = item.partition("=")
        out.append((key, json.loads(value) if value[:1] in "0123456789-[{tfn" else value))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--data", default="fresh-facts:eval")
    ap.add_argument("--model", default=None)
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE of LearnConfig (inner.X for InnerLoopConfig)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import seal.core.inner_loop as inner_loop
    from seal.core.config import LearnConfig
    from seal.core.models import load_model
    from seal.core.store import KnowledgeStore
    from seal.domains.knowledge.data import load_dataset
    from seal.domains.knowledge.qa import evaluate
    from seal.guard.check import _general, golden_reference, load_guard_questions
    from seal.learn import learn

    lm = load_model(args.model)
    questions = load_guard_questions()
    golden = golden_reference(lm, questions)["general"]
    cfg = LearnConfig()
    cfg.guard.enabled = False
    for key, value in _parse_set(args.set):
        target = cfg.inner if key.startswith("inner.") else cfg
        setattr(target, key.removeprefix("inner."), value)
    epochs_cfg = cfg.inner.epochs
    cfg.inner.stop_recalled, cfg.inner.min_epochs = True, epochs_cfg + 1  # recalled() runs every epoch, never stops
    passages = load_dataset(args.data)[args.offset : args.offset + args.n]
    original = inner_loop.recalled
    rows: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    current: dict = {}

    def measured(model, data, device, batch=8):
        flags = original(model, data, device, batch)
        t = time.perf_counter()
        qa = evaluate(lm, [current["passage"]])
        general = [a for a, g in zip(_general(lm, questions), golden) if g]
        current["epoch"] += 1
        row = {"article": current["passage"].id, "epoch": current["epoch"], "recalled_all": sum(flags) / len(flags),
               "recalled_pairs": _share_pairs(flags, data), "accuracy": qa.accuracy,
               "general_kept": sum(general) / len(general), "train_seconds_so_far": round(t - current["start"], 1),
               "config": args.set}
        rows.append(row)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return flags

    inner_loop.recalled = measured
    for p in passages:
        current.update(passage=p, epoch=0, start=time.perf_counter())
        with tempfile.TemporaryDirectory() as tmp:
            store = KnowledgeStore(Path(tmp) / "store")
            learn(lm, store, [p], cfg)
    print("\nepoch  recalled(all)  recalled(Q-A pairs)  accuracy  general kept")
    for e in range(1, epochs_cfg + 1):
        at = [r for r in rows if r["epoch"] == e]
        mean = lambda k: sum(r[k] for r in at) / len(at)  # noqa: E731
        print(f"{e:5d}  {mean('recalled_all'):13.2f}  {mean('recalled_pairs'):19.2f}  {mean('accuracy'):8.2f}  {mean('general_kept'):12.2f}")


def _share_pairs(flags, data) -> float | None:
    """The share recalled among the examples with a prompt (question -> sentence pairs); the raw
    passage and the self-edit lines without a prompt are left out."""
    pairs = [f for f, x in zip(flags, data) if any(lab == -100 for lab in x[1][1:])]
    return sum(pairs) / len(pairs) if pairs else None


if __name__ == "__main__":
    main()
