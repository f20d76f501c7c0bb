"""`seal train ...`: the outer loop (ReST-EM) that teaches the model to write better self-edits."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seal.cli.common import HELP_MARKUP, MinFaithOpt, cli_errors, err, finite, out
from seal.core.config import MAX_K, MAX_LR, check_inner, check_ranges, check_sampling
from seal.core.runtime import SealError, json_text

train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=HELP_MARKUP, help="ReST-EM: train the self-edit generator.")

# The executor's options, shared by every `train` command (knowledge here, ARC in cli/arc.py).
ExecutorOpt = typer.Option("local", "--executor", help="local (this process) or ray (parallel trials on Ray actors; pip install 'seal[ray]').")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray: join this cluster (auto, or ray://host:10001) [default: start a local one].")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Ray: trial workers, each holding a loaded model [default: as many as the cluster fits].")
TrialCpusOpt = typer.Option(1.0, "--trial-cpus", callback=finite, help="Ray: CPUs (and torch threads) per worker.")
TrialGpusOpt = typer.Option(0.0, "--trial-gpus", callback=finite, help="Ray: GPUs per worker, fractional allowed (0.25: four workers per GPU).")

PRESETS = {
    # Sized for a 2-core CPU: a self-edit trial takes one to three minutes with the embedded model.
    "cpu": {"n": 20, "k": 3, "repeats": 1, "iterations": 2},
}


@train_app.command("knowledge")
@cli_errors
def knowledge(
    out_dir: Path = typer.Option(..., "--out", help="Run folder: iter_N generators, work/ records, stats.jsonl."),
    data: str = typer.Option("fresh-facts:train", "--data", help="Training passages: fresh-facts:train or a SEAL-format file (never eval passages)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="cpu: 20 passages, k=3, R=1, 2 iterations. Explicit options override it."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Training passages [default: all]."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="ReST-EM iterations [paper: 2]."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help=f"Self-edits sampled per passage, 1 to {MAX_K} [paper: 5]."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Inner-loop runs per self-edit [paper: 3]."),
    format: str = typer.Option("implications", "--format", help="Self-edit format the generator writes."),
    reward: str = typer.Option("gold", "--reward", help="gold (the passages' questions) or self-questions (the model's own Q/A pairs)."),
    min_gain: Optional[float] = typer.Option(None, "--min-gain", callback=finite, help="Drop passages whose best reward does not beat passage-only by this much."),
    exclude: str = typer.Option("fresh-facts:eval,fresh-facts:test", "--exclude", help="Comma list of evaluation sets that must not overlap the training passages."),
    seed: int = typer.Option(0, "--seed", help="Root seed."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model folder [default: embedded]."),
    executor: str = ExecutorOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
    trial_cpus: float = TrialCpusOpt,
    trial_gpus: float = TrialGpusOpt,
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, callback=finite, help="Self-edit sampling temperature [the format's: 1.0, sentence formats 0 (greedy), which needs a temperature > 0 for k > 1]."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=finite, help=f"Inner-loop learning rate, 0 < lr <= {MAX_LR:g} [1e-3]."),
    min_faithfulness: Optional[float] = MinFaithOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the per-iteration statistics as JSON."),
):
    """Run ReST-EM: sample k self-edits per passage, score them by the inner loop, SFT on the best."""
    from seal.domains.knowledge.domain import knowledge_domain
    from seal.core.models import load_model
    from seal.rl.rest_em import RestEMConfig
    from seal.domains.knowledge.self_edit import get_format

    if preset is not None and preset not in PRESETS:
        raise SealError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if reward not in ("gold", "self-questions"):
        raise SealError(f"unknown reward {reward!r} (gold or self-questions)")
    check_executor(executor)
    get_format(format)
    given = {"n": n, "iterations": iterations, "k": k, "repeats": repeats}
    values = {**PRESETS.get(preset or "", {}), **{key: v for key, v in given.items() if v is not None}}
    cfg = RestEMConfig(data=data, format=format, reward=reward, min_gain=min_gain, seed=seed, model=model,
                       exclude=[e for e in exclude.split(",") if e], **values)
    if lr is not None:
        cfg.inner.lr = lr
    cfg.sampling.min_faithfulness = min_faithfulness
    cfg.sampling.temperature = temperature
    check_rest_em(cfg)
    checked = knowledge_domain(cfg, None)  # reading and checking the items needs no model: done before it loads
    checked.validate(checked.load_items(cfg.data, cfg.n), cfg.k)
    with err.status("loading model"):
        domain = knowledge_domain(cfg, load_model(cfg.model))
    stats = run_outer_loop(domain, cfg, out_dir, executor, ray_address, workers, trial_cpus, trial_gpus)
    if as_json:
        print(json_text(stats))
        return
    table = Table(title=f"ReST-EM ({out_dir})")
    cols = ("iteration", "mean reward", "best-of-k", "passage-only", "base", "best > passage", "std within", "std between", "kept", "s")
    for c in cols:
        table.add_column(c)
    for s in stats:
        table.add_row(str(s["iteration"]), *_reward_cells(s), str(s["n_kept"]), f"{s['seconds']:.0f}")
        if "gold" in s:  # trials rewarded by self-questions, re-read with the gold questions
            table.add_row(f"{s['iteration']} (gold)", *_reward_cells(s["gold"]), "", "")
    out.print(table)
    for s in stats:
        if s.get("self_question_gold_correlation") is not None:
            out.print(f"iteration {s['iteration']}: correlation of the self-question reward with the gold reward "
                      f"{s['self_question_gold_correlation']:.2f} (Pearson, over trials)")
    names = ", ".join(str(out_dir / f"iter_{s['iteration']}") for s in stats)
    out.print(f"generators: {names}", soft_wrap=True)
    out.print(f"statistics: {out_dir / 'stats.jsonl'}  plot: {out_dir / 'plot.png'}", soft_wrap=True)


def check_rest_em(cfg) -> None:
    """The outer loop's settings, checked before the model loads (run_rest_em checks only the inner loops, after)."""
    check_inner(cfg.inner, "inner loop")
    check_inner(cfg.sft, "generator SFT")
    check_sampling(cfg.sampling)
    check_ranges("ReST-EM", [("k", cfg.k, lambda v: 1 <= v <= MAX_K, f"1 to {MAX_K}", int)])


def check_executor(executor: str) -> None:
    if executor not in ("local", "ray"):
        raise SealError(f"unknown executor {executor!r} (local or ray)")


def run_outer_loop(domain, cfg, out_dir: Path, executor: str, ray_address, workers, trial_cpus: float, trial_gpus: float) -> list[dict]:
    """ReST-EM on any domain, in this process or on Ray actors (each builds the domain itself)."""
    from seal.core.progress import RichReporter
    from seal.rl.rest_em import LocalExecutor, run_rest_em

    if executor == "ray":
        from seal.rl.ray_executor import RayExecutor

        with RayExecutor(ray_address, workers, trial_cpus, trial_gpus) as ex:
            stats = run_rest_em(domain, cfg, out_dir, executor=ex, reporter=RichReporter(err))
            if ex.retries:
                err.print(f"{ex.retries} job(s) were retried after their Ray worker died", style="yellow")
        return stats
    return run_rest_em(domain, cfg, out_dir, executor=LocalExecutor(), reporter=RichReporter(err))


def _reward_cells(s: dict) -> list[str]:
    within = "n/a (R=1)" if s["std_within_self_edit"] is None else f"{s['std_within_self_edit']:.3f}"
    return [f"{s['mean_reward']:.3f}", f"{s['best_of_k_reward']:.3f}", f"{s['passage_only_reward']:.3f}", f"{s['base_reward']:.3f}",
            f"{s['share_best_beats_passage']:.0%}", within, f"{s['std_between_self_edits']:.3f}"]
