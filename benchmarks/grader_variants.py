"""Would reading punctuation as a space change any stored grade? (no model needed)

    python benchmarks/grader_variants.py --runs runs/eval-recall runs/k8 runs/k8b ...

The local grader uses SQuAD's normalisation, which deletes punctuation without leaving a space, so
"0°C" does not contain "0" and "Einstein's" does not contain "Einstein". This re-grades every answer
stored in `seal bench knowledge` and `seal bench continual` run folders (article questions and
general questions) with a variant that also accepts the gold answer when punctuation is read as a
space (except "." and "," between digits, so "7.2" still does not contain "7"), and lists the
distinct answers whose grade it would change.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from seal.domains.knowledge.data import load_dataset
from seal.domains.knowledge.grading import _ARTICLES, local_grade
from seal.guard.general import load_general

_SPACE = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[^\w\s.,]")


def spaced(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", _SPACE.sub(" ", text.lower())).split())


def spaced_contains(gold: str, prediction: str) -> bool:
    """The variant's extra acceptance: the gold answer in the prediction, punctuation read as a space."""
    g = spaced(gold)
    return bool(g) and f" {g} " in f" {spaced(prediction)} "


def stored_answers(run: Path, general: dict[str, list[str]]):
    """(kind, gold answers, prediction) of every answer a run folder's records hold."""
    config = json.loads((run / "config.json").read_text())
    golds: dict[str, list[str]] = {}
    if config.get("benchmark") == "continual":
        golds = {p.id: [q.answer for q in p.questions] for p in load_dataset(config["data"])}
    for line in (run / "trials.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        for q in r.get("per_question") or []:
            yield "article", [q["gold"]], q["prediction"]
        for pid, preds in (r.get("predictions") or {}).items():
            for gold, p in zip(golds.get(pid, []), preds):
                yield "article", [gold], p
        for a in (r.get("general_answers") or []) + ((r.get("canary") or {}).get("general_answers") or []):
            if a["id"] in general:
                yield "general", general[a["id"]], a["prediction"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="seal bench knowledge or continual run folders")
    args = ap.parse_args()
    general = {q.id: q.answers for q in load_general()}
    counts: Counter = Counter()
    changed: list[tuple[str, str, str]] = []
    seen: set[tuple[str, tuple[str, ...], str]] = set()
    for run in args.runs:
        for kind, golds, prediction in stored_answers(run, general):
            key = (kind, tuple(golds), prediction)
            if key in seen:
                continue
            seen.add(key)
            old = any(local_grade("", g, prediction).correct for g in golds)
            new = old or any(spaced_contains(g, prediction) for g in golds)
            counts[kind, old, new] += 1
            if old != new:
                changed.append((kind, golds[0], prediction))
    print("| answers | distinct | right now | right with the variant | changed |")
    print("|---|---|---|---|---|")
    for kind in ("article", "general"):
        n = sum(v for (k, _, _), v in counts.items() if k == kind)
        right = sum(v for (k, old, _), v in counts.items() if k == kind and old)
        right_new = sum(v for (k, _, new), v in counts.items() if k == kind and new)
        print(f"| {kind} | {n} | {right} | {right_new} | {right_new - right} |")
    for kind, gold, prediction in changed:
        print(f"- {kind}: gold {gold!r}: {prediction[:110]}")


if __name__ == "__main__":
    main()
