"""`seal arc ...`: few-shot ARC (the paper's second experiment)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seal.cli.common import HELP_MARKUP, ModelOpt, cli_errors, err, finite, out
from seal.cli.train import ExecutorOpt, RayAddressOpt, TrialCpusOpt, TrialGpusOpt, WorkersOpt, check_executor, run_outer_loop
from seal.core.config import MAX_K, MAX_LORA_R
from seal.core.runtime import json_text
from seal.domains.arc.self_edit import check_decoding

arc_app = typer.Typer(no_args_is_help=True, rich_markup_mode=HELP_MARKUP, help="Few-shot ARC: self-edits that configure test-time training.")

# Test-time training and self-edit sampling options, the same for `eval` and `train`.
MaxSequencesOpt = typer.Option(24, "--max-sequences", min=1, help="Cap on augmented pseudo-tasks trained on per task.")
ViewsOpt = typer.Option(4, "--views", min=1, max=8, help="Invertible views of the test input that vote.")
LoraROpt = typer.Option(64, "--lora-r", min=1, help=f"LoRA rank of the per-task adapter, 1 to {MAX_LORA_R}.")
TemperatureOpt = typer.Option(1.0, "--temperature", min=0.0, callback=finite, help="Self-edit sampling temperature.")
DecodingOpt = typer.Option("choices", "--self-edit-decoding", help="How the model writes a self-edit: choices (it picks each value among those the schema allows, by its own log-probabilities; always parses) or free (it writes the JSON text; the 135M model wrote 0 usable of 10).")


@arc_app.command("eval")
@cli_errors
def evaluate(
    out_dir: Path = typer.Option(..., "--out", help="Run folder: config.json, trials.jsonl, results.json (resumed when rerun)."),
    data: str = typer.Option("generated:eval", "--data", help="generated:eval|train, arc-1b:eval|train, arc-1:eval|train, or an ARC challenges JSON."),
    n: Optional[int] = typer.Option(20, "--n", min=1, help="First N tasks."),
    methods: str = typer.Option("icl,ttt,self-edit", "--methods", help="Comma list of icl (in context), ttt (one fixed configuration), self-edit (configured by the model's own JSON self-edit), seal (by the generator of `seal arc train`, --generator), oracle (a small grid of configurations until one solves: an upper bound)."),
    generator: Optional[Path] = typer.Option(None, "--generator", help="The seal method's generator: OUT/iter_N of `seal arc train`."),
    seed: int = typer.Option(0, "--seed", help="Root seed of every trial."),
    model: Optional[str] = ModelOpt,
    max_sequences: int = MaxSequencesOpt,
    views: int = ViewsOpt,
    lora_r: int = LoraROpt,
    temperature: float = TemperatureOpt,
    decoding: str = DecodingOpt,
    ttt_lr: Optional[float] = typer.Option(None, "--ttt-lr", min=0.0, callback=finite, help="Learning rate of the ttt method's fixed configuration [default: 2e-3, ttt.DEFAULT_EDIT's]."),
    fresh: bool = typer.Option(False, "--fresh", help="Clear this run's records and start over (default: resume)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
):
    """Solve rate per method on ARC tasks (paper, Llama-3.2-1B: in-context 0%, TTT with untrained self-edits 20%,
    SEAL 72.5%, oracle TTT 100%)."""
    from seal.domains.arc.evaluate import ArcEvalConfig, check_methods, run_arc_eval
    from seal.domains.arc.ttt import TTTConfig
    from seal.core.config import SamplingConfig
    from seal.core.models import load_model
    from seal.core.progress import RichReporter

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    check_methods(chosen, str(generator) if generator else None)
    cfg = ArcEvalConfig(data=data, n=n, methods=chosen, seed=seed, model=model, generator=str(generator) if generator else None, ttt_lr=ttt_lr,
                        ttt=TTTConfig(lora_r=lora_r, max_sequences=max_sequences, views=views),
                        sampling=SamplingConfig(temperature=temperature, max_new_tokens=80), decoding=decoding)
    check_decoding(decoding)  # before the model loads
    check_ttt(lora_r, ttt_lr, cfg.sampling, data, n, None)
    with err.status("loading model"):
        lm = load_model(model)
    _show(run_arc_eval(cfg, out_dir, lm, fresh=fresh, reporter=RichReporter(err)), out_dir, as_json)


@arc_app.command("train")
@cli_errors
def train(
    out_dir: Path = typer.Option(..., "--out", help="Run folder: iter_N generators, work/ records, stats.jsonl (resumed when rerun)."),
    data: str = typer.Option("generated:train", "--data", help="Training tasks: generated:train, arc-1b:train, arc-1:train or a challenges JSON (never their eval split)."),
    n: Optional[int] = typer.Option(12, "--n", min=1, help="Training tasks per iteration."),
    iterations: int = typer.Option(1, "--iterations", min=1, help="ReST-EM iterations."),
    k: int = typer.Option(3, "--k", min=1, help=f"Self-edits sampled per task, 1 to {MAX_K} [paper: 15]."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="TTT runs per self-edit (distinct seeds)."),
    min_reward: float = typer.Option(1.0, "--min-reward", min=0.0, max=1.0, callback=finite, help="Keep a task's best self-edit only when its mean reward over the repeats reaches this (1.0: it solved the task every time; 0: keep the best even when none solved)."),
    seed: int = typer.Option(0, "--seed", help="Root seed."),
    model: Optional[str] = ModelOpt,
    max_sequences: int = MaxSequencesOpt,
    views: int = ViewsOpt,
    lora_r: int = LoraROpt,
    temperature: float = TemperatureOpt,
    decoding: str = DecodingOpt,
    executor: str = ExecutorOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
    trial_cpus: float = TrialCpusOpt,
    trial_gpus: float = TrialGpusOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the per-iteration statistics as JSON."),
):
    """ReST-EM on ARC through the same outer loop as `seal train knowledge`: sample k JSON self-edits
    per task, score each by test-time training (solved or not), fine-tune the generator on those that
    solved their task (--min-reward). Evaluate it with `seal arc eval --methods seal --generator OUT/iter_N`."""
    from seal.core.config import SamplingConfig
    from seal.core.models import load_model
    from seal.domains.arc.domain import ArcDomain
    from seal.domains.arc.ttt import TTTConfig
    from seal.rl.rest_em import RestEMConfig

    check_executor(executor)
    check_decoding(decoding)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=80)
    check_ttt(lora_r, None, sampling, data, n, k)
    with err.status("loading model"):
        domain = ArcDomain(load_model(model), ttt=TTTConfig(lora_r=lora_r, max_sequences=max_sequences, views=views),
                           sampling=sampling, decoding=decoding)
    cfg = RestEMConfig(data=data, n=n, iterations=iterations, k=k, repeats=repeats, seed=seed, model=model, exclude=[],
                       format=domain.format, sampling=sampling, min_reward=min_reward or None)
    stats = run_outer_loop(domain, cfg, out_dir, executor, ray_address, workers, trial_cpus, trial_gpus)
    if as_json:
        print(json_text(stats))
        return
    table = Table(title=f"ReST-EM on ARC ({out_dir})")
    for c in ("iteration", "mean solved", "best-of-k", "default TTT", "in context", "malformed", "kept", "s"):
        table.add_column(c)
    for st in stats:
        table.add_row(str(st["iteration"]), f"{st['mean_reward']:.2f}", f"{st['best_of_k_reward']:.2f}",
                      f"{st['passage_only_reward']:.2f}", f"{st['base_reward']:.2f}", str(st.get("malformed_self_edits", "")),
                      str(st["n_kept"]), f"{st['seconds']:.0f}")
    out.print(table)
    names = ", ".join(str(out_dir / f"iter_{st['iteration']}") for st in stats)
    out.print(f"generators: {names}", soft_wrap=True)


def check_ttt(lora_r: int, ttt_lr: float | None, sampling, data: str, n: int | None, k: int | None) -> None:
    """Options and tasks refused before the model loads (tasks are read again, with the tokenizer, once it has)."""
    from seal.core.config import check_ranges, check_sampling
    from seal.domains.arc.tasks import select_tasks

    check_ranges("arc", [("--lora-r", lora_r, lambda v: 1 <= v <= MAX_LORA_R, f"1 to {MAX_LORA_R}", int),
                         ("--ttt-lr", ttt_lr, lambda v: 0 < v < 1, "0 < lr < 1"),
                         ("--k", k, lambda v: 1 <= v <= MAX_K, f"1 to {MAX_K}", int)])
    check_sampling(sampling)
    select_tasks(data, n)


@arc_app.command("report")
@cli_errors
def report(
    out_dir: Path = typer.Argument(..., help="A run folder of `seal arc eval` (finished, running or killed)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
):
    """Rewrite results.json from the trials a run has so far (no model is loaded)."""
    from seal.domains.arc.evaluate import report_arc_eval

    _show(report_arc_eval(out_dir), out_dir, as_json)


def _show(results: dict, out_dir: Path, as_json: bool) -> None:
    if as_json:
        print(json_text(results))
        return
    table = Table(title=f"ARC {results['config']['data']} ({out_dir})")
    for col in ("method", "solved", "rate %", "95% CI", "s/task", "peak RSS MB", "by family", "paper %"):
        table.add_column(col)
    for name, m in results["methods"].items():
        lo, hi = m["rate_ci95"]
        table.add_row(name, f"{m['solved']}/{m['n_tasks']}", f"{100 * m['rate']:.1f}", f"{100 * lo:.0f}-{100 * hi:.0f}",
                      f"{m['seconds_per_task']:.1f}", f"{m['peak_rss_mb']:.0f}",
                      " ".join(f"{f} {v}" for f, v in m["by_family"].items()),
                      "" if m["paper_rate_percent"] is None else f"{m['paper_rate_percent']:.1f}")
    out.print(table)
    for s in results["skipped"]:
        err.print(f"skipped {s['id']}: {s['reason']}")
    if (out_dir / "attempts.png").is_file():
        err.print(f"tasks with each method's attempt: {out_dir / 'attempts.png'}")
