"""Aggregate benchmark trials into results.json, report.md and plot.png (all recomputable from
OUT/trials.jsonl alone)."""

from __future__ import annotations

from pathlib import Path

from seal.core.config import as_json
from seal.bench.floors import random_sentence_floor
from seal.core.metrics import bootstrap_ci, mean, std
from seal.core.plots import figure
from seal.core.runtime import SealError, json_text, redact_url

# The paper's numbers (Qwen2.5-7B, SQuAD, 200 passages; SEAL.md section 2), for reference only.
PAPER = {
    "single": {"base": 32.7, "passage": 33.5, "self-edit:implications": 39.7, "teacher": 46.3, "generator": 47.0},
    "multi": {"base": 32.7, "passage": 36.0, "self-edit:implications": 50.6, "teacher": 59.4, "generator": 58.2},
}


def paper_number(mode: str, condition: str) -> float | None:
    return PAPER.get(mode, {}).get(condition.split(":")[0] if condition.startswith("generator") else condition)


def _by_passage_and_repeat(trials: list[dict]) -> dict[tuple, list[bool]]:
    by_pr: dict[tuple, list[bool]] = {}
    for t in trials:
        for q in t["per_question"]:
            by_pr.setdefault((q["passage_id"], t["repeat"]), []).append(q["correct"])
    return by_pr


def _passage_means(by_pr: dict[tuple, list[bool]]) -> dict[str, float]:
    """Accuracy per passage, mean over its repeats (in repeat order), passages sorted."""
    per: dict[str, list[float]] = {}
    for pid, rep in sorted(by_pr):
        per.setdefault(pid, []).append(mean(by_pr[(pid, rep)]))
    return {pid: mean(v) for pid, v in per.items()}


def passage_accuracies(trials: list[dict]) -> dict[str, float]:
    """Accuracy per passage (a multi-mode trial's questions carry their passage), mean over repeats."""
    return _passage_means(_by_passage_and_repeat(trials))


def paired_difference(records: list[dict], a: str, b: str) -> dict:
    """Accuracy of condition a minus condition b over the passages both have, with a bootstrap CI."""
    acc = {c: passage_accuracies([r for r in records if r.get("condition") == c and r["key"] != "base-canary"]) for c in (a, b)}
    common = sorted(set(acc[a]) & set(acc[b]))
    if not common:
        raise SealError(f"no passage has trials of both {a!r} and {b!r}")
    d = [acc[a][p] - acc[b][p] for p in common]
    return {"a": a, "b": b, "n_passages": len(d), "difference": mean(d), "ci95": list(bootstrap_ci(d)),
            "better": sum(x > 0 for x in d), "worse": sum(x < 0 for x in d)}


def aggregate_condition(trials: list[dict]) -> dict:
    rows = [(t["repeat"], q["passage_id"], q) for t in trials for q in t["per_question"]]
    by_pr = _by_passage_and_repeat(trials)
    accuracies = _passage_means(by_pr)
    passages = list(accuracies)
    repeats = sorted({rep for _, rep in by_pr})
    per_passage = list(accuracies.values())
    per_repeat = [mean([mean(by_pr[(pid, r)]) for pid in passages if (pid, r) in by_pr]) for r in repeats]
    canaries = [t["canary"] for t in trials if t.get("canary")]
    edits = [e for t in trials for e in t.get("self_edits", [])]
    judged = [q for _, _, q in rows if q.get("judge_correct") is not None]
    out = {
        "accuracy": mean(per_passage),
        "accuracy_ci95": list(bootstrap_ci(per_passage)),
        "accuracy_micro": mean([q["correct"] for _, _, q in rows]),
        "exact_match": mean([q["exact_match"] for _, _, q in rows]),
        "f1": mean([q["f1"] for _, _, q in rows]),
        # recite, then answer: the short answer the model copied out of its own recalled sentence
        "short_exact_match": _mean_of([q for _, _, q in rows], "short_exact_match"),
        "short_f1": _mean_of([q for _, _, q in rows], "short_f1"),
        "std_over_passages": std(per_passage),
        "std_over_repeats": std(per_repeat),
        "n_passages": len(passages),
        "n_questions": len({(pid, q["question"]) for _, pid, q in rows}),
        "n_trials": len(trials),
        "repeats": len(repeats),
        "seconds_per_trial": mean([t["trial_seconds"] for t in trials]),
        "peak_rss_mb": max(t.get("peak_rss_mb", 0) for t in trials),
        "reasoning_accuracy": mean([c["reasoning_accuracy"] for c in canaries]) if canaries else None,
        "perplexity": mean([c["perplexity"] for c in canaries]) if canaries else None,
        "n_canary_adapters": len(canaries),
        "sequences_per_trial": mean([len(t["sequences"]) for t in trials]),
        # Self-edit quality (issue 6): None for conditions without self-edits or older records.
        "faithfulness": _mean_of(edits, "faithfulness"),
        "coverage": _mean_of(edits, "coverage"),
        "filter_rate": _mean_of(edits, "filter_rate"),
    }
    if any("judge_correct" in q for _, _, q in rows):
        out["judge_accuracy"] = mean([q["judge_correct"] for q in judged]) if judged else None
        out["judge_agreement"] = mean([q["judge_correct"] == q["correct"] for q in judged]) if judged else None
        out["judge_errors"] = sum(1 for _, _, q in rows if q.get("judge_correct") is None)
    return out


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return mean(values) if values else None


def aggregate(cfg, records: list[dict]) -> dict:
    base_canary = next((r["canary"] for r in records if r["key"] == "base-canary"), None)
    conditions = {}
    for name in cfg.conditions:
        trials = [r for r in records if r.get("condition") == name and r["key"] != "base-canary"]
        if not trials:
            continue
        c = aggregate_condition(trials)
        c["reasoning_accuracy_base"] = base_canary["reasoning_accuracy"] if base_canary else None
        c["perplexity_base"] = base_canary["perplexity"] if base_canary else None
        if name == "base" and base_canary:
            c["reasoning_accuracy"], c["perplexity"] = base_canary["reasoning_accuracy"], base_canary["perplexity"]
        c["paper_accuracy"] = paper_number(cfg.mode, name)
        c.update(_general_cost(trials, base_canary) if name != "base" else
                 {"general_kept": 1.0 if (base_canary or {}).get("general_answers") else None, "general_copies": 0.0})
        conditions[name] = c
    return {"config": public_config(cfg), "conditions": conditions, "random_sentence": _floor(cfg, records)}


def _general_cost(trials: list[dict], base_canary: dict | None) -> dict:
    """Of the general questions the golden copy answers, the share the updated models still answer
    (mean over the trials whose general ability was measured), and their answers that copy the
    trained text. None for runs recorded before the general questions were asked."""
    from seal.guard.general import general_summary

    base = (base_canary or {}).get("general_answers")
    measured = [t for t in trials if (t.get("canary") or {}).get("general_answers")]
    if not base or not measured:
        return {"general_kept": None, "general_copies": None}
    summaries = [general_summary(t["canary"]["general_answers"], base, t.get("sequences", [])) for t in measured]
    kept = [x["kept"] for x in summaries if x["kept"] is not None]  # None: the golden copy answers none of them
    return {"general_kept": mean(kept) if kept else None, "general_copies": mean([x["copies"] for x in summaries])}


def _short(c: dict, key: str, pct: bool = False) -> str:
    x = c.get(key)
    if x is None:
        return ""
    return f" / {_pct(x)}" if pct else f" / {x:.3f}"


def _general_cell(c: dict) -> str:
    if c.get("general_kept") is None:
        return "n/a"
    return f"{_pct(c['general_kept'])} ({c['general_copies']:.1f})"


def _floor(cfg, records: list[dict]) -> dict | None:
    """The random-sentence floor over the passages the trials asked about (None before any question
    was asked; {"error": ...} when the run's data can no longer be read)."""
    from seal.domains.knowledge.data import select_passages

    asked = {q["passage_id"] for r in records for q in r.get("per_question", [])}
    if not asked:
        return None
    try:
        passages = select_passages(cfg.data, cfg.n, cfg.offset)
    except SealError as e:
        return {"error": str(e)}
    return random_sentence_floor([p for p in passages if p.id in asked])


def floor_line(results: dict) -> str:
    """One sentence that puts the floor next to the headline accuracy."""
    f = results.get("random_sentence")
    if f is None or "error" in f:
        return f"Floor (random-sentence): n/a ({f['error'] if f else 'no question asked yet'})."
    return (f"Floor (random-sentence, no model): answering each question with a random sentence of its own passage "
            f"scores {_pct(f['accuracy'])}% under the same grader ({f['n_questions']} questions, {f['n_passages']} passages).")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _temperature(cfg: dict) -> str:
    t = cfg["sampling"]["temperature"]
    return "per format (1.0 paper formats, 0 sentence formats)" if t is None else f"{t:g}"


def render_report(results: dict) -> str:
    cfg = results["config"]
    lines = [
        "# Knowledge incorporation benchmark",
        "",
        f"Data `{cfg['data']}` (n={cfg['n'] or 'all'}, offset {cfg['offset']}), mode **{cfg['mode']}**, "
        f"{cfg['repeats']} repeat(s), model `{cfg['model'] or 'smollm2-135m-instruct (embedded)'}`, "
        f"LoRA r={cfg['inner']['lora_r']} alpha={cfg['inner']['lora_alpha']} lr={cfg['inner']['lr']} "
        f"epochs={cfg['inner']['epochs']}, self-edits k={cfg['sampling']['k']} T={_temperature(cfg)}.",
        "",
        "Accuracy = closed-book, local grader (exact match or gold contained in the answer), macro over passages, "
        "95% CI by bootstrap over passages. Reasoning = canary multiple-choice accuracy of the updated model "
        "(golden copy in brackets); ppl = perplexity on held-out English; EM and F1: of the answer as given / of the "
        "short answer the same model then copies out of it (recite, then answer); general kept = of the general questions "
        "the golden copy answers (generative, no topic), the share the updated model still answers, and how many of "
        "its answers copy the trained text.",
        "",
        "| condition | accuracy % | 95% CI | micro % | EM % | F1 | std passages | std repeats | reasoning % | ppl "
        "| general kept % (copies) | s/trial | peak MB | paper % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in results["conditions"].items():
        lo, hi = c["accuracy_ci95"]
        reasoning = f"{_pct(c['reasoning_accuracy'])} ({_pct(c['reasoning_accuracy_base'])})"
        ppl = "n/a" if c["perplexity"] is None else f"{c['perplexity']:.2f}"
        paper = "" if c["paper_accuracy"] is None else f"{c['paper_accuracy']:.1f}"
        lines.append(
            f"| {name} | {_pct(c['accuracy'])} | {_pct(lo)}-{_pct(hi)} | {_pct(c['accuracy_micro'])} | "
            f"{_pct(c['exact_match'])}{_short(c, 'short_exact_match', True)} | {c['f1']:.3f}{_short(c, 'short_f1')} | "
            f"{_pct(c['std_over_passages'])} | {_pct(c['std_over_repeats'])} | "
            f"{reasoning} | {ppl} | {_general_cell(c)} | {c['seconds_per_trial']:.1f} | {c['peak_rss_mb']:.0f} | {paper} |"
        )
    if "accuracy" in (f := results.get("random_sentence") or {}):
        lo, hi = f["accuracy_ci95"]
        lines.append(f"| random-sentence (floor, no model) | {_pct(f['accuracy'])} | {_pct(lo)}-{_pct(hi)} | "
                     f"{_pct(f['accuracy_micro'])} | {_pct(f['exact_match'])} | {f['f1']:.3f} | | | | | | | | |")
    lines += ["", floor_line(results)]
    edited = {name: c for name, c in results["conditions"].items() if c.get("faithfulness") is not None}
    if edited:
        lines += ["", "Self-edits: faithfulness = share of their names, numbers and long words found in the passage; "
                  "coverage = share of passage sentences some kept line is about; filtered = share of lines dropped as unfaithful.",
                  "", "| condition | faithfulness % | coverage % | filtered % | sequences / trial |", "|---|---|---|---|---|"]
        for name, c in edited.items():
            lines.append(f"| {name} | {_pct(c['faithfulness'])} | {_pct(c['coverage'])} | {_pct(c['filter_rate'])} | {c['sequences_per_trial']:.1f} |")
    if any("judge_accuracy" in c for c in results["conditions"].values()):
        lines += ["", "| condition | judge accuracy % | local accuracy (micro) % | agreement % | judge errors |", "|---|---|---|---|---|"]
        for name, c in results["conditions"].items():
            if "judge_accuracy" in c:
                lines.append(f"| {name} | {_pct(c['judge_accuracy'])} | {_pct(c['accuracy_micro'])} | {_pct(c['judge_agreement'])} | {c['judge_errors']} |")
    if results.get("paired"):
        lines += ["", "Paired over passages (a - b, 95% CI by bootstrap over passages):", "",
                  "| a - b | passages | difference (points) | 95% CI | a better / worse |", "|---|---|---|---|---|"]
        for d in results["paired"]:
            lo, hi = d["ci95"]
            lines.append(f"| {d['a']} - {d['b']} | {d['n_passages']} | {100 * d['difference']:+.1f} | "
                         f"{100 * lo:+.1f} to {100 * hi:+.1f} | {d['better']} / {d['worse']} |")
    lines += ["", "Paper numbers: Qwen2.5-7B on 200 SQuAD passages, graded by GPT-4.1 (SEAL.md section 2); quoted for reference, not comparable."]
    return "\n".join(lines) + "\n"


def render_plot(results: dict, path: Path) -> None:
    names = list(results["conditions"])
    conds = [results["conditions"][n] for n in names]
    acc = [100 * c["accuracy"] for c in conds]
    err = [[100 * (c["accuracy"] - c["accuracy_ci95"][0]) for c in conds], [100 * (c["accuracy_ci95"][1] - c["accuracy"]) for c in conds]]
    with figure(path, 2, (11, 4)) as (ax1, ax2):
        ax1.bar(names, acc, yerr=err, capsize=4, color="tab:blue")
        if "accuracy" in (results.get("random_sentence") or {}):
            ax1.axhline(100 * results["random_sentence"]["accuracy"], color="gray", linestyle=":", label="random sentence (floor)")
            ax1.legend()
        ax1.set_ylabel("closed-book accuracy %")
        ax1.set_title("new-fact retention (95% CI)")
        reasoning = [100 * (c["reasoning_accuracy"] or 0) for c in conds]
        base = conds[0]["reasoning_accuracy_base"] if conds else None  # a run with only its base canary so far
        ax2.bar(names, reasoning, color="tab:green")
        if base is not None:
            ax2.axhline(100 * base, color="black", linestyle="--", label="golden copy")
            ax2.legend()
        ax2.set_ylabel("canary accuracy %")
        ax2.set_title("reasoning accuracy after the update")
        for ax in (ax1, ax2):
            ax.tick_params(axis="x", rotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")


def public_config(cfg) -> dict:
    """A benchmark config as written to disk: credentials inside a URL redacted (an API key is only
    ever read from the environment variable that api_key_env names)."""
    conf = as_json(cfg)
    for k in ("teacher_url", "judge_url"):
        conf[k] = redact_url(conf.get(k))
    return conf


def write_artifacts(out: Path, cfg, records: list[dict], paired: list[tuple[str, str]] = ()) -> dict:
    results = aggregate(cfg, records)
    if paired:
        results["paired"] = [paired_difference(records, a, b) for a, b in paired]
    (out / "results.json").write_text(json_text(results, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_report(results))
    render_plot(results, out / "plot.png")
    return results
