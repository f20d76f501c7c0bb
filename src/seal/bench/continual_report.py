"""Tables and figures of a `seal bench continual` run, recomputed from its trials.jsonl alone.

Per strategy and ordering, the accuracy matrix A[r][i] is the closed-book accuracy on the i-th
passage of the ordering after edit r (i <= r). From it: just-learned mean (mean of A[i][i]),
final mean (mean of the last row), retention (final / just-learned) and backward transfer
(BWT, mean over i < N-1 of A[N-1][i] - A[i][i]; negative is forgetting).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from seal.core.plots import figure


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _std(xs):
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def matrix(records: list[dict], n: int) -> list[list[float | None]]:
    """Lower-triangular matrix of one ordering: row r = after edit r, column i = i-th passage learned."""
    a: list[list[float | None]] = [[None] * n for _ in range(n)]
    for rec in records:
        r, order = rec["step"], rec["order"]
        for i in range(r + 1):
            a[r][i] = rec["row"].get(order[i])
    return a


def sequence_metrics(a: list[list[float | None]]) -> dict:
    n = len(a)
    diag = [a[i][i] for i in range(n)]
    complete = all(x is not None for x in a[-1])
    just = _mean(diag)
    final = _mean(a[-1]) if complete else None
    return {
        "just_learned": just,
        "final": final,
        "retention": final / just if final is not None and just else None,
        "bwt": _mean([a[-1][i] - a[i][i] for i in range(n - 1)]) if complete and n > 1 else None,
        "complete": complete,
    }


def alone_comparison(records: list[dict], alone: dict[str, float]) -> dict:
    """What each later edit (the 2nd of an ordering on) learned against what the same passage reaches alone: the
    mean difference, and how many are within 10 points of it (issue 14's goal)."""
    if not alone:
        return {}
    later = [(x["row"][x["passage_id"]], alone[x["passage_id"]]) for x in records
             if x["step"] > 0 and x["passage_id"] in alone]
    return {
        "alone": _mean(list(alone.values())),
        "alone_by_passage": alone,
        "later_just_learned": _mean([j for j, _ in later]),
        "later_minus_alone": _mean([j - a for j, a in later]),
        "later_within_10": sum(j >= a - 0.1 - 1e-9 for j, a in later),
        "later_edits": len(later),
    }


def aggregate_strategy(records: list[dict], n: int, base: dict, alone: dict[str, float] | None = None) -> dict:
    seqs = sorted({r["sequence"] for r in records})
    mats = {s: matrix([r for r in records if r["sequence"] == s], n) for s in seqs}
    per_seq = {s: sequence_metrics(m) for s, m in mats.items()}
    mean_matrix = [[_mean([mats[s][r][i] for s in seqs]) for i in range(n)] for r in range(n)]
    steps = []
    for r in range(n):
        rows = [x for x in records if x["step"] == r]
        if not rows:
            continue
        steps.append({
            "step": r,
            "seen_accuracy": _mean([_mean(list(x["row"].values())) for x in rows]),
            "just_learned": _mean([x["row"][x["passage_id"]] for x in rows]),
            "general_kept": _mean([x["general"]["kept"] for x in rows]),
            "general_copies": _mean([x["general"]["copies"] for x in rows]),
            "canary_accuracy": _mean([x["canary"]["reasoning_accuracy"] for x in rows]),
            "canary_margin": _mean([x["canary"].get("margin") for x in rows]),
            "perplexity": _mean([x["canary"]["perplexity"] for x in rows]),
        })
    last = [x for x in records if x["step"] == n - 1]
    first = [x for x in records if x["step"] == 0]
    keys = ("just_learned", "final", "retention", "bwt")
    return {
        "n_edits": len(records),
        "sequences": {str(s): m for s, m in per_seq.items()},
        **{k: _mean([m[k] for m in per_seq.values()]) for k in keys},
        **{f"{k}_std": _std([m[k] for m in per_seq.values()]) for k in keys},
        "general_kept_first": _mean([x["general"]["kept"] for x in first]),
        "general_kept_final": _mean([x["general"]["kept"] for x in last]),
        "general_copies_final": _mean([x["general"]["copies"] for x in last]),
        "canary_final": _mean([x["canary"]["reasoning_accuracy"] for x in last]),
        "canary_margin_final": _mean([x["canary"].get("margin") for x in last]),
        "perplexity_final": _mean([x["canary"]["perplexity"] for x in last]),
        "seconds_per_edit": _mean([x["edit_seconds"] for x in records if not x.get("resumed")]),
        "train_seconds_per_edit": _mean([x["train_seconds"] for x in records]),
        "epochs_run": _mean([x.get("epochs_run") for x in records]),
        "peak_rss_mb": max((x.get("peak_rss_mb", 0) for x in records), default=None),
        # the forgetting guard inside each learn: its decisions and its share of the edit's seconds
        "guard": {d: sum(x.get("guard") == d for x in records) for d in ("accepted", "scaled", "rejected", "forced")
                  if any(x.get("guard") == d for x in records)},
        "guard_seconds_per_edit": _mean([x.get("guard_seconds") for x in records]),
        "steps": steps,
        "matrix": mean_matrix,
        **alone_comparison(records, alone or {}),
    }


def aggregate(cfg, records: list[dict]) -> dict:
    from dataclasses import asdict

    base = next((r for r in records if r["key"] == "base"), None)
    out = {"config": asdict(cfg), "strategies": {}}
    if base is not None:
        out["base"] = {
            "accuracy": _mean(list(base["row"].values())),
            "general_accuracy": base["general"]["accuracy"],
            "general_base_correct": base["general"]["n_base_correct"],
            "canary_accuracy": base["canary"]["reasoning_accuracy"],
            "canary_margin": base["canary"].get("margin"),
            "perplexity": base["canary"]["perplexity"],
        }
    for s in cfg.strategies:
        recs = [r for r in records if r.get("strategy") == s and not r.get("alone")]
        alone = {r["passage_id"]: r["accuracy"] for r in records if r.get("strategy") == s and r.get("alone")}
        if recs:
            out["strategies"][s] = aggregate_strategy(recs, cfg.n, base or {}, alone)
    return out


def _f(x, pct=False, digits=2) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}" if pct else f"{x:.{digits}f}"


def render_report(results: dict) -> str:
    cfg, base = results["config"], results.get("base", {})
    lines = [
        f"# Continual learning: {cfg['n']} passages of {cfg['data']} learned one after another",
        "",
        f"{cfg['sequences']} ordering(s); recipe: format {cfg['learn']['format']}, lr {cfg['learn']['inner']['lr']}, "
        f"{cfg['learn']['inner']['epochs']} epochs, LoRA r={cfg['learn']['inner']['lora_r']}; each strategy's options "
        "override these. Accuracy is closed-book with the title as topic (local grader).",
        "",
        f"Golden copy: passages {_f(base.get('accuracy'), True)}%, general questions "
        f"{base.get('general_base_correct', 'n/a')} correct, canary {_f(base.get('canary_accuracy'), True)}% "
        f"(margin {_f(base.get('canary_margin'))}), perplexity {_f(base.get('perplexity'))}.",
        "",
        "| strategy | edits | just-learned % | final % | retention | BWT | general kept first / final % | copies (final) "
        "| canary % | margin | perplexity | s/edit (guard s) | epochs | guard decisions | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results["strategies"].items():
        spread = "" if s["final_std"] is None else f" ± {100 * s['final_std']:.1f}"
        lines.append(
            f"| {name} | {s['n_edits']} | {_f(s['just_learned'], True)} | {_f(s['final'], True)}{spread} | "
            f"{_f(s['retention'])} | {_f(s['bwt'])} | {_f(s['general_kept_first'], True)} / {_f(s['general_kept_final'], True)} | "
            f"{_f(s['general_copies_final'], digits=1)} | {_f(s['canary_final'], True)} | {_f(s['canary_margin_final'])} | "
            f"{_f(s['perplexity_final'])} | {_f(s['seconds_per_edit'], digits=0)} ({_f(s.get('guard_seconds_per_edit'), digits=0)}) | "
            f"{_f(s['epochs_run'], digits=1)} | {', '.join(f'{k} {v}' for k, v in s.get('guard', {}).items()) or 'off'} | "
            f"{_f(s['peak_rss_mb'], digits=0)} |"
        )
    lines += ["", "final ± std over orderings; retention = final / just-learned; BWT = mean of A[N-1][i] - A[i][i].", ""]
    alone = {name: s for name, s in results["strategies"].items() if "alone" in s}
    if alone:
        lines += ["Each passage also learned alone, into a fresh store: does a later edit learn as well?", "",
                  "| strategy | alone % | later edits (2..N) just-learned % | later - alone (points) | within 10 points |",
                  "|---|---|---|---|---|"]
        for name, s in alone.items():
            diff = None if s["later_minus_alone"] is None else 100 * s["later_minus_alone"]
            lines.append(f"| {name} | {_f(s['alone'], True)} | {_f(s['later_just_learned'], True)} | "
                         f"{_f(diff, digits=1)} | {s['later_within_10']} of {s['later_edits']} |")
        lines.append("")
    for name, s in results["strategies"].items():
        lines += [f"## {name}", "", "Mean accuracy matrix (row: after edit r; column: i-th passage learned), %:", ""]
        n = len(s["matrix"])
        lines += ["| after edit | " + " | ".join(str(i + 1) for i in range(n)) + " |", "|---" * (n + 1) + "|"]
        for r, row in enumerate(s["matrix"]):
            lines.append(f"| {r + 1} | " + " | ".join("" if x is None else f"{100 * x:.0f}" for x in row) + " |")
        lines += ["", "| step | seen % | just learned % | general kept % | copies | canary % | margin | perplexity |",
                  "|---|---|---|---|---|---|---|---|"]
        for st in s["steps"]:
            lines.append(
                f"| {st['step'] + 1} | {_f(st['seen_accuracy'], True)} | {_f(st['just_learned'], True)} | "
                f"{_f(st['general_kept'], True)} | {_f(st['general_copies'], digits=1)} | {_f(st['canary_accuracy'], True)} | "
                f"{_f(st['canary_margin'])} | {_f(st['perplexity'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def heatmap_name(strategy: str) -> str:
    return "heatmap_" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", strategy) + ".png"


def render_plots(results: dict, out: Path) -> list[Path]:
    paths = []
    for name, s in results["strategies"].items():
        path = out / heatmap_name(name)
        n = len(s["matrix"])
        with figure(path, 1, (1.2 + 0.6 * n, 0.8 + 0.55 * n)) as (ax,):
            import numpy as np

            m = np.array([[np.nan if x is None else x for x in row] for row in s["matrix"]], dtype=float)
            im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
            for r in range(n):
                for i in range(n):
                    if not np.isnan(m[r, i]):
                        ax.text(i, r, f"{100 * m[r, i]:.0f}", ha="center", va="center", color="w" if m[r, i] < 0.6 else "k", fontsize=8)
            ax.set_xticks(range(n), [str(i + 1) for i in range(n)])
            ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
            ax.set_xlabel("passage (order learned)")
            ax.set_ylabel("after edit")
            ax.set_title(name, fontsize=9)
            ax.figure.colorbar(im, ax=ax, fraction=0.046)
        paths.append(path)
    path = out / "plot.png"
    with figure(path, 3, (14, 4)) as (ax1, ax2, ax3):
        for name, s in results["strategies"].items():
            xs = [st["step"] + 1 for st in s["steps"]]
            ax1.plot(xs, [st["seen_accuracy"] for st in s["steps"]], marker="o", label=name)
            ax2.plot(xs, [st["general_kept"] for st in s["steps"]], marker="o", label=name)
            ax3.plot(xs, [st["canary_accuracy"] for st in s["steps"]], marker="o", label=name)
        base = results.get("base", {})
        if base.get("canary_accuracy") is not None:
            ax3.axhline(base["canary_accuracy"], color="gray", ls="--", label="golden copy")
        for ax, title in ((ax1, "mean accuracy over passages learned so far"), (ax2, "general questions kept"),
                          (ax3, "canary accuracy")):
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("edit")
            ax.set_xticks(range(1, len(next(iter(results["strategies"].values()))["matrix"]) + 1))
            ax.set_ylim(0, 1.02)
        ax1.legend(fontsize=7)
    paths.append(path)
    return paths


def write_artifacts(out: Path, cfg, records: list[dict]) -> dict:
    results = aggregate(cfg, records)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(render_report(results) + "\n")
    if results["strategies"]:
        render_plots(results, out)
    return results
