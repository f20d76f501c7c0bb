"""`seal bench speed`: how long each `seal learn` takes, phase by phase, and what it keeps.

    seal bench speed --n 3 --recipe replay:stop-recalled=on --out runs/speed

Recipes are `seal bench continual` strategies (NAME[:OPTION=V...]); the first is the reference,
today's default `seal learn` unless given. Each recipe learns the same N articles, in the same
order and with the same seeds, one after another into a fresh store, so later learns (longer
replay, more probes for the guard) are timed too; the recipes take turns, learn by learn, so that
a load that comes and goes on a shared machine falls on each alike. The run is a continual run (same folder, records,
resume and merge; after every learn the head is asked every article so far, the general questions
and the canary, untimed), plus one record of the machine (its measured float32 matmul rate, the
threads used, the model's size) and three files: speed.json, speed.md and speed.png.

Per learn: wall seconds of the whole `learn()` call split into its phases (closed-book QA before,
self-edits, the golden copy's caches, training, QA after, guard, and the rest: loading adapters,
commit), the tokens training read, an estimate of its FLOPs (4 x parameters x tokens: a forward
pass and the activations' gradients; the frozen weights take no weight gradient) and the rate it
achieved beside the machine's, peak RSS; and the quality beside it. Each recipe's time and quality
are then given as ratios and differences to the reference measured in the same run.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from seal.bench.continual import ContinualConfig, run_continual
from seal.core.models import LoadedModel
from seal.core.plots import figure
from seal.core.progress import NullReporter, Reporter
from seal.core.run_records import TrialLog

MACHINE = "machine"  # trials.jsonl key of the machine record
# learn()'s phases, in order, as its manifest's timings name them; "other" is the wall time left
PHASES = ("qa_before_seconds", "generate_seconds", "caches_seconds", "train_seconds", "qa_after_seconds", "guard_seconds")
SPEED_FILES = ("speed.json", "speed.md", "speed.png")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def machine_rate(lm: LoadedModel, size: int = 1024, seconds: float = 2.0) -> dict:
    """The machine as training sees it: float32 matmul GFLOP/s (size x size, repeated for about
    `seconds` after a warm-up), the threads torch uses, and the parameters a token's forward pass
    multiplies by (every weight once; tied embeddings count once, as the output layer)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    rate = 2 * size**3 * n / (time.perf_counter() - t0) / 1e9
    params = sum(p.numel() for p in {id(p): p for p in lm.model.parameters()}.values())
    return {"key": MACHINE, "matmul_gflops": round(rate, 1), "threads": torch.get_num_threads(),
            "model_params": params, "cpu": _cpu_name(), "python": platform.python_version(), "torch": torch.__version__}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_speed(cfg: ContinualConfig, out: Path, fresh: bool = False, reporter: Reporter | None = None,
              lm: LoadedModel | None = None) -> dict:
    """Run (or resume) the recipes' chains in `out`, then write the speed report."""
    from seal.core.models import load_model

    reporter = reporter or NullReporter()
    lm = lm or load_model(cfg.model)
    with reporter.task("machine: float32 matmul rate", 1) as task:
        machine = machine_rate(lm)
        task.advance()
    # written before the first learn, so that `seal bench report` can write the speed files of a killed run
    run_continual(cfg, out, fresh=fresh, reporter=reporter, lm=lm, interleave=True, first=(machine,))
    return write_speed(out, cfg, TrialLog(out / "trials.jsonl").records)


def learn_row(rec: dict, machine: dict, base: dict) -> dict:
    """One learn's time, work and quality, from its continual record."""
    wall = rec["edit_seconds"]
    phases = {p.removesuffix("_seconds"): rec.get(p) for p in PHASES}
    known = sum(v for v in phases.values() if v is not None)
    tokens = rec.get("input_tokens")
    gflop = 4 * machine["model_params"] * tokens / 1e9 if tokens is not None else None
    earlier = [v for pid, v in rec["row"].items() if pid != rec["passage_id"]]
    ppl = rec["canary"]["perplexity"] / base["canary"]["perplexity"] if base["canary"].get("perplexity") else None
    return {
        "step": rec["step"], "passage_id": rec["passage_id"], "resumed": rec.get("resumed", False),
        "wall_seconds": wall, **{f"{k}_seconds": v for k, v in phases.items()},
        "other_seconds": round(wall - known, 2) if phases["train"] is not None else None,
        "epochs_run": rec.get("epochs_run"), "input_tokens": tokens, "trained_tokens": rec.get("trained_tokens"),
        "gflop": round(gflop, 1) if gflop is not None else None,
        "gflops": round(gflop / rec["train_seconds"], 1) if gflop is not None and rec.get("train_seconds") else None,
        "peak_rss_mb": rec.get("peak_rss_mb"), "guard": rec.get("guard"),
        "just_learned": rec["row"][rec["passage_id"]], "earlier": _mean(earlier), "seen": _mean(list(rec["row"].values())),
        "general_kept": rec["general"].get("kept"), "canary_accuracy": rec["canary"].get("reasoning_accuracy"),
        "perplexity_ratio": round(ppl, 4) if ppl is not None else None,
    }


def recipe_summary(rows: list[dict]) -> dict:
    timed = [r for r in rows if not r["resumed"]]  # a resumed learn's wall time was not measured whole
    last = rows[-1]
    return {
        "learns": len(rows),
        **{k: _mean([r[k] for r in timed]) for k in ("wall_seconds", *(f"{p.removesuffix('_seconds')}_seconds" for p in PHASES),
                                                    "other_seconds", "epochs_run", "input_tokens", "gflops")},
        "first_wall_seconds": rows[0]["wall_seconds"], "last_wall_seconds": last["wall_seconds"],
        "peak_rss_mb": max((r["peak_rss_mb"] or 0 for r in rows), default=None),
        "just_learned": _mean([r["just_learned"] for r in rows]),
        "final": last["seen"],
        "general_kept_final": last["general_kept"], "canary_final": last["canary_accuracy"],
        "perplexity_ratio_final": last["perplexity_ratio"],
        "guard": {d: sum(r["guard"] == d for r in rows) for d in ("accepted", "scaled", "rejected", "forced")
                  if any(r["guard"] == d for r in rows)},
    }


def speed_results(cfg: ContinualConfig, records: list[dict]) -> dict:
    machine = next((r for r in records if r.get("key") == MACHINE), None)
    base = next((r for r in records if r.get("key") == "base"), None)
    out = {"config": {"data": cfg.data, "n": cfg.n, "recipes": cfg.strategies, "seed": cfg.seed}, "machine": machine,
           "recipes": {}}
    if machine is None or base is None:
        return out
    for name in cfg.strategies:
        recs = sorted((r for r in records if r.get("strategy") == name and r.get("sequence") == 0 and not r.get("alone")),
                      key=lambda r: r["step"])
        if recs:
            rows = [learn_row(r, machine, base) for r in recs]
            out["recipes"][name] = {**recipe_summary(rows), "rows": rows}
    ref = out["recipes"].get(cfg.strategies[0])
    for s in out["recipes"].values():
        s["vs_reference"] = _versus(s, ref) if ref else {}
    return out


def _versus(s: dict, ref: dict) -> dict:
    """Time as a ratio to the reference recipe's (< 1 is faster), quality as a difference (points or x)."""
    def ratio(k):
        return round(s[k] / ref[k], 3) if s.get(k) is not None and ref.get(k) else None

    def diff(k):
        return round(s[k] - ref[k], 4) if s.get(k) is not None and ref.get(k) is not None else None

    return {"wall": ratio("wall_seconds"), "train": ratio("train_seconds"), "guard": ratio("guard_seconds"),
            "last_wall": ratio("last_wall_seconds"), "just_learned": diff("just_learned"), "final": diff("final"),
            "general_kept_final": diff("general_kept_final"), "perplexity_ratio_final": diff("perplexity_ratio_final")}


def _f(x, pct=False, digits=2):
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}" if pct else f"{x:.{digits}f}"


def render_speed(results: dict) -> str:
    m = results["machine"] or {}
    cfg = results["config"]
    lines = [f"# Speed: {cfg['n']} learns in a chain per recipe on {cfg['data']}", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('threads', '?')} threads, float32 matmul {m.get('matmul_gflops', '?')} GFLOP/s; "
             f"model {m.get('model_params', 0) / 1e6:.1f}M parameters. Reference: `{cfg['recipes'][0]}`.", "",
             "| recipe | s/learn | x ref | first | last | QA before | self-edits | caches | train | QA after | guard | other | "
             "epochs | GFLOP/s | just learned % | final % | general kept % | perplexity x golden | guard decisions |",
             "|---" * 19 + "|"]
    for name, s in results["recipes"].items():
        v = s["vs_reference"]
        lines.append(
            f"| `{name}` | {_f(s['wall_seconds'], digits=1)} | {_f(v.get('wall'))} | {_f(s['first_wall_seconds'], digits=0)} | "
            f"{_f(s['last_wall_seconds'], digits=0)} | "
            + " | ".join(_f(s[f"{p.removesuffix('_seconds')}_seconds"], digits=1) for p in PHASES)
            + f" | {_f(s['other_seconds'], digits=1)} | {_f(s['epochs_run'], digits=1)} | {_f(s['gflops'], digits=1)} | "
            f"{_f(s['just_learned'], True)} | {_f(s['final'], True)} | {_f(s['general_kept_final'], True)} | "
            f"{_f(s['perplexity_ratio_final'])} | {', '.join(f'{k} {n}' for k, n in s['guard'].items())} |")
    lines += ["", "Seconds are means over the chain's learns (a resumed learn is left out); phases are wall seconds inside "
              "`learn()`; GFLOP/s is the training's estimated 4 x parameters x tokens over its seconds. Final: the mean "
              "accuracy over all articles after the last learn.", ""]
    for name, s in results["recipes"].items():
        lines += [f"## `{name}`", "", "| learn | article | wall s | train s | guard s | epochs | tokens read | GFLOP/s | "
                  "just learned % | earlier % | general kept % | perplexity x | RSS MB |", "|---" * 13 + "|"]
        for r in s["rows"]:
            lines.append(f"| {r['step'] + 1} | {r['passage_id']} | {_f(r['wall_seconds'], digits=1)} | {_f(r['train_seconds'], digits=1)} | "
                         f"{_f(r['guard_seconds'], digits=1)} | {r['epochs_run']} | {r['input_tokens']} | {_f(r['gflops'], digits=1)} | "
                         f"{_f(r['just_learned'], True)} | {_f(r['earlier'], True)} | {_f(r['general_kept'], True)} | "
                         f"{_f(r['perplexity_ratio'])} | {_f(r['peak_rss_mb'], digits=0)} |")
        lines.append("")
    return "\n".join(lines)


def plot_speed(results: dict, path: Path) -> None:
    names = list(results["recipes"])
    with figure(path, 2, (13, 4)) as (ax1, ax2):
        bottom = [0.0] * len(names)
        for p in (*PHASES, "other_seconds"):
            vals = [results["recipes"][n][p.removesuffix("_seconds") + "_seconds"] or 0.0 for n in names]
            ax1.barh(names, vals, left=bottom, label=p.removesuffix("_seconds"))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax1.set_xlabel("seconds per learn (mean)")
        ax1.legend(fontsize=7)
        for n in names:
            rows = results["recipes"][n]["rows"]
            ax2.plot([r["step"] + 1 for r in rows], [r["wall_seconds"] for r in rows], marker="o", label=n)
        ax2.set_xlabel("learn in the chain")
        ax2.set_ylabel("wall seconds")
        ax2.legend(fontsize=7)


def write_speed(out: Path, cfg: ContinualConfig, records: list[dict]) -> dict:
    results = speed_results(cfg, records)
    (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "speed.md").write_text(render_speed(results) + "\n")
    if results["recipes"]:
        plot_speed(results, out / "speed.png")
    return results
