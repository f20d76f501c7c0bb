"""How firmly does the golden copy know each general question, and is that what learning loses?

    python benchmarks/general_fragility.py --runs runs/k8 runs/k8b [--samples 16 --temperature 0.7]

Samples the golden copy's answer (no adapters, closed-book, no topic) to every general question
(resources/general/questions.jsonl) `--samples` times at `--temperature` and counts the correct
samples: a question the golden copy answers right greedily but in few samples is one it knows
narrowly. Beside it, from the records of `seal bench continual` run folders (no model needed for
that part), the share of edits after which each question the golden copy got right was lost.
The last table compares the two by group: questions lost often, sometimes, never.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def losses(runs: list[Path]) -> tuple[Counter, int]:
    """Per question id, after how many edits it was lost; and how many edit records there were.
    A record seen twice (a run folder copied to grow it by a sequence) counts once."""
    lost: Counter = Counter()
    n = 0
    seen: set[str] = set()
    for run in runs:
        records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines() if line.strip()]
        golden = next(r for r in records if r["key"] == "base")
        known = {a["id"] for a in golden["general_answers"] if a["correct"]}
        for r in records:
            same = json.dumps([r["key"], r.get("order"), r.get("row"), r.get("general_answers")])
            if r["key"] == "base" or "general_answers" not in r or same in seen:
                continue
            seen.add(same)
            n += 1
            lost.update(a["id"] for a in r["general_answers"] if a["id"] in known and not a["correct"])
    return lost, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="seal bench continual run folders")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--model", default=None, help="a local HF model folder (default: the embedded model)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-question numbers here")
    args = ap.parse_args()

    from seal.core.generation import Sampling
    from seal.core.models import load_model
    from seal.domains.knowledge.qa import answer_prompt, first_line
    from seal.guard.general import ask_general, is_correct, load_general

    lost, n_records = losses(args.runs)
    lm = load_model(args.model)
    questions = load_general()
    greedy = {a["id"]: a["correct"] for a in ask_general(lm, questions)}
    sampling = Sampling(max_new_tokens=24, temperature=args.temperature, top_p=1.0, n=args.samples, seed=0)
    outs = lm.generator.generate([answer_prompt(lm, q.question, None) for q in questions], sampling=sampling, batch_size=4)
    share = {q.id: sum(is_correct(q, first_line(o)) for o in out) / args.samples for q, out in zip(questions, outs)}

    rows = sorted((q for q in questions if greedy[q.id]), key=lambda q: (-lost[q.id], share[q.id]))
    print(f"{n_records} edit records in {len(args.runs)} runs; golden copy right (greedy) on {len(rows)} of {len(questions)}")
    print(f"\n| question | lost after % of edits | golden samples correct (T={args.temperature}, n={args.samples}) |")
    print("|---|---|---|")
    for q in rows:
        print(f"| {q.id} {q.question} | {100 * lost[q.id] / max(n_records, 1):.0f}% | {100 * share[q.id]:.0f}% |")
    groups = [("lost after >= 25% of edits", lambda f: f >= 0.25), ("lost sometimes (< 25%)", lambda f: 0 < f < 0.25),
              ("never lost", lambda f: f == 0)]
    print("\n| group | questions | share of all losses | golden samples correct, mean |")
    print("|---|---|---|---|")
    total = sum(lost[q.id] for q in rows) or 1
    for name, test in groups:
        members = [q for q in rows if test(lost[q.id] / max(n_records, 1))]
        mean = sum(share[q.id] for q in members) / len(members) if members else float("nan")
        print(f"| {name} | {len(members)} | {100 * sum(lost[q.id] for q in members) / total:.0f}% | {100 * mean:.0f}% |")
    if args.json:
        args.json.write_text(json.dumps({q.id: {"lost": lost[q.id], "records": n_records, "golden_greedy": greedy[q.id],
                                                  "golden_sampled": share[q.id]} for q in questions}, indent=1))


if __name__ == "__main__":
    main()
