"""`seal bench ...`: benchmark commands (knowledge incorporation)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seal.cli.common import HELP_MARKUP, MinFaithOpt, cli_errors, err, finite, out
from seal.core.config import MAX_K, MAX_LORA_R, MAX_LR
from seal.core.runtime import SealError, json_text

bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=HELP_MARKUP, help="Benchmarks that reproduce the paper's tables.")


@bench_app.command("knowledge")
@cli_errors
def knowledge(
    out_dir: Path = typer.Option(..., "--out", help="Run folder: config.json, trials.jsonl, results.json, report.md, plot.png."),
    preset: Optional[str] = typer.Option(None, "--preset", help="quick (fresh-facts, 5 conditions, <30 min on a CPU) or paper (200 SQuAD passages, for a GPU). Explicit options override it."),
    data: Optional[str] = typer.Option(None, "--data", help="fresh-facts[:train|eval|test] or a SEAL-format JSON/JSONL (a JSON list is shuffled with seed 42 like the paper)."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Number of passages [default: all]."),
    offset: Optional[int] = typer.Option(None, "--offset", min=0, help="First passage of the slice after the shuffle."),
    conditions: Optional[str] = typer.Option(None, "--conditions", help="Comma list: base, passage, self-edit:FORMAT, generator:PATH, teacher, gold-qa (train on the questions asked later: a ceiling, for reference)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Trials per passage and condition, with distinct seeds."),
    mode: Optional[str] = typer.Option(None, "--mode", help="single (one adapter per passage) or multi (one adapter for all)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Root seed of every trial."),
    model: Optional[str] = typer.Option(None, "--model", help="Student (inner-loop) model folder [default: embedded]."),
    canary_sample: Optional[int] = typer.Option(None, "--canary-sample", min=0, help="Single mode: adapters per condition whose reasoning accuracy is measured."),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="Teacher: a local model folder that writes the self-edits."),
    teacher_url: Optional[str] = typer.Option(None, "--teacher-url", help="Teacher: an OpenAI-compatible endpoint (base URL, e.g. http://host:8000/v1)."),
    teacher_name: Optional[str] = typer.Option(None, "--teacher-name", help="Teacher model name at --teacher-url."),
    teacher_file: Optional[str] = typer.Option(None, "--teacher-file", help="Teacher: stored completions (SEAL format, e.g. gpt4_1_val.json); the first per passage is used."),
    teacher_format: Optional[str] = typer.Option(None, "--teacher-format", help="Self-edit format asked of (or parsed from) the teacher."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="Optional LLM judge: an OpenAI-compatible endpoint."),
    judge_name: Optional[str] = typer.Option(None, "--judge-name", help="Judge model name at --judge-url."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the API key [OPENAI_API_KEY]."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help=f"Self-edits per passage per trial, 1 to {MAX_K}."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, callback=finite, help="Self-edit sampling temperature."),
    min_faithfulness: Optional[float] = MinFaithOpt,
    lr: Optional[float] = typer.Option(None, "--lr", callback=finite, help=f"Inner-loop LoRA learning rate, 0 < lr <= {MAX_LR:g}."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Inner-loop epochs."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", min=1, help=f"Inner-loop LoRA rank, 1 to {MAX_LORA_R}."),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", min=1, help="Inner-loop LoRA alpha."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete OUT and start over (default: resume finished trials)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
):
    """Knowledge incorporation: closed-book accuracy after learning each passage, per condition (paper Table 2)."""
    from seal.bench.knowledge import PRESETS, BenchConfig, run_bench
    from seal.core.progress import RichReporter

    if preset is not None and preset not in PRESETS:
        raise SealError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    given = dict(
        data=data, n=n, offset=offset, repeats=repeats, mode=mode, seed=seed, model=model, canary_sample=canary_sample,
        teacher_model=teacher_model, teacher_url=teacher_url, teacher_name=teacher_name, teacher_file=teacher_file,
        teacher_format=teacher_format, judge_url=judge_url, judge_name=judge_name, api_key_env=api_key_env,
        conditions=[c.strip() for c in conditions.split(",") if c.strip()] if conditions else None,
    )
    values = {**PRESETS.get(preset or "", {}), **{key: v for key, v in given.items() if v is not None}}
    cfg = BenchConfig(**{f.name: values[f.name] for f in fields(BenchConfig) if f.name in values})
    for name, v in (("k", k), ("temperature", temperature), ("min_faithfulness", min_faithfulness)):
        if v is not None:
            setattr(cfg.sampling, name, v)
    for name, v in (("lr", lr), ("epochs", epochs), ("lora_r", lora_r), ("lora_alpha", lora_alpha)):
        if v is not None:
            setattr(cfg.inner, name, v)
    results = run_bench(cfg, out_dir, fresh=fresh, reporter=RichReporter(err))
    _show(results, out_dir, as_json)


@bench_app.command("continual")
@cli_errors
def continual(
    out_dir: Path = typer.Option(..., "--out", help="Run folder: config.json, trials.jsonl (one record per edit), results.json, report.md, plot.png, heatmap_STRATEGY.png, stores/."),
    data: str = typer.Option("fresh-facts:eval", "--data", help="fresh-facts[:train|eval|test] or a SEAL-format JSON/JSONL whose passages have questions."),
    n: int = typer.Option(8, "--n", min=1, help="Passages learned one after another."),
    offset: int = typer.Option(0, "--offset", min=0, help="First passage of the slice."),
    sequences: int = typer.Option(1, "--sequences", min=1, help="Orderings of the passages (0: data order, others seeded shuffles); the same for every strategy."),
    strategy: str = typer.Option("stack,replay,consolidate", "--strategy", help="Comma list of NAME[:OPTION=V...]: NAME stack (each version on top of the head), replay (plus a sample of the chain's stored examples), consolidate (one adapter retrained from the base on everything); options lr=, epochs=, stop-loss=, stop-recalled=on|off, min-epochs=, mix=on|off, batch=, replay=, writer=head|base, anchors=, guard=on|off, anchor-loss=ce|kl, anchor-topk=, anchor-weight=, anchor-focus=, replay-weight=, prose=, prose-weight=, r=, alpha=, modules=q_proj+v_proj, layers= (LoRA on the top N layers), each within the range of its seal learn option and checked before the run folder is written. E.g. stack,stack:lr=1e-3,replay:stop-loss=0.1."),
    format: Optional[str] = typer.Option(None, "--format", help="Self-edit format [default: seal learn's]."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=finite, help=f"Learning rate of every strategy unless it says lr=, 0 < lr <= {MAX_LR:g} [default: seal learn's]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs of every strategy unless it says epochs= [default: seal learn's]."),
    seed: int = typer.Option(0, "--seed", help="Root seed of the orderings and of every learn."),
    only_sequence: list[int] = typer.Option([], "--only-sequence", help="Run only this ordering (0-based, below --sequences; repeatable), e.g. one per process or machine; `seal bench merge` joins the folders."),
    alone: bool = typer.Option(False, "--alone", help="Also learn each passage alone into a fresh store, to compare what later edits learn with it (one more learn per passage and strategy)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder [default: embedded]."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete OUT and start over (default: resume finished edits)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
):
    """Continual learning: N passages learned one after another per strategy; what is kept after every edit."""
    from seal.core.config import LearnConfig, check_inner
    from seal.bench.continual import ContinualConfig, run_continual
    from seal.core.progress import RichReporter

    learn_cfg = LearnConfig()
    if format is not None:
        learn_cfg.format = format
    if lr is not None:
        learn_cfg.inner.lr = lr
    if epochs is not None:
        learn_cfg.inner.epochs = epochs
    check_inner(learn_cfg.inner, "bench continual")  # each strategy's own options are checked by run_continual, before it writes
    cfg = ContinualConfig(data=data, n=n, offset=offset, sequences=sequences, seed=seed, model=model, learn=learn_cfg, alone=alone,
                          strategies=[s.strip() for s in strategy.split(",") if s.strip()])
    results = run_continual(cfg, out_dir, fresh=fresh, reporter=RichReporter(err), only=sorted(set(only_sequence)) or None)
    _show_continual(results, out_dir, as_json)


@bench_app.command("speed")
@cli_errors
def speed(
    out_dir: Path = typer.Option(..., "--out", help="Run folder: a continual run (config.json, trials.jsonl, results.json, report.md, stores/) plus speed.json, speed.md, speed.png."),
    recipe: list[str] = typer.Option([], "--recipe", help="A candidate recipe NAME[:OPTION=V...] as in `seal bench continual --strategy` (repeatable, or a comma list), e.g. replay:stop-recalled=on. The default `seal learn` recipe always runs first as the reference."),
    data: str = typer.Option("fresh-facts:eval", "--data", help="fresh-facts[:train|eval|test] or a SEAL-format JSON/JSONL whose passages have questions."),
    n: int = typer.Option(3, "--n", min=1, help="Learns in each recipe's chain (later learns replay more and have more to keep)."),
    offset: int = typer.Option(0, "--offset", min=0, help="First passage of the slice."),
    seed: int = typer.Option(0, "--seed", help="Root seed of every learn."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder [default: embedded]."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete OUT and start over (default: resume finished learns)."),
    as_json: bool = typer.Option(False, "--json", help="Print speed.json to stdout."),
):
    """Time `seal learn` phase by phase for the default recipe and candidates, side by side on the same articles and seeds."""
    from seal.bench.continual import ContinualConfig
    from seal.bench.speed import run_speed
    from seal.core.config import LearnConfig
    from seal.core.progress import RichReporter

    learn_cfg = LearnConfig()
    recipes = [learn_cfg.strategy] + [x for r in recipe for x in (s.strip() for s in r.split(",")) if x and x != learn_cfg.strategy]
    cfg = ContinualConfig(data=data, n=n, offset=offset, sequences=1, seed=seed, model=model, learn=learn_cfg, strategies=recipes)
    results = run_speed(cfg, out_dir, fresh=fresh, reporter=RichReporter(err))
    if as_json:
        print(json_text(results))
        return
    table = _table(f"seal learn speed, {n} learns per recipe ({out_dir})",
                   ("recipe", "s/learn", "x ref", "train s", "guard s", "epochs", "GFLOP/s", "just learned %", "final %",
                    "general kept %", "perplexity x"))

    def f(x, fmt="{:.1f}", scale=1.0):
        return "n/a" if x is None else fmt.format(scale * x)

    for name, s in results["recipes"].items():
        table.add_row(name, f(s["wall_seconds"]), f(s["vs_reference"].get("wall"), "{:.2f}"), f(s["train_seconds"]),
                      f(s["guard_seconds"]), f(s["epochs_run"]), f(s["gflops"]), f(s["just_learned"], scale=100),
                      f(s["final"], scale=100), f(s["general_kept_final"], scale=100), f(s["perplexity_ratio_final"], "{:.2f}"))
    out.print(table)
    m = results["machine"] or {}
    out.print(f"machine: {m.get('cpu')}, {m.get('threads')} threads, float32 matmul {m.get('matmul_gflops')} GFLOP/s")
    out.print(f"report: {out_dir / 'speed.md'}  plot: {out_dir / 'speed.png'}")


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


def _show_continual(results: dict, out_dir: Path, as_json: bool) -> None:
    if as_json:
        print(json_text(results))
        return
    cfg = results["config"]
    table = _table(f"continual learning, {cfg['n']} passages x {cfg['sequences']} ordering(s) ({out_dir})",
                   ("strategy", "edits", "just-learned %", "final %", "retention", "BWT", "general kept %", "canary %", "perplexity", "s/edit"))

    def f(x, pct=False):
        return "n/a" if x is None else f"{100 * x:.1f}" if pct else f"{x:.2f}"

    for name, s in results["strategies"].items():
        table.add_row(name, str(s["n_edits"]), f(s["just_learned"], True), f(s["final"], True), f(s["retention"]), f(s["bwt"]),
                      f(s["general_kept_final"], True), f(s["canary_final"], True), f(s["perplexity_final"]),
                      "n/a" if s["seconds_per_edit"] is None else f"{s['seconds_per_edit']:.0f}")
    out.print(table)
    for name, s in results["strategies"].items():
        if "alone" in s:
            out.print(f"{name}: alone {f(s['alone'], True)}%; later edits {f(s['later_just_learned'], True)}% "
                      f"({s['later_within_10']} of {s['later_edits']} within 10 points of alone)")
    out.print(f"report: {out_dir / 'report.md'}  plot: {out_dir / 'plot.png'}")


@bench_app.command("report")
@cli_errors
def report(
    out_dir: Path = typer.Argument(..., help="A run folder of `seal bench knowledge` or `seal bench continual` (finished, running or killed)."),
    paired: list[str] = typer.Option([], "--paired", help="A,B: condition A minus B per passage, mean and bootstrap CI (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
):
    """Rewrite results.json, report.md and plot.png from the trials a run has so far (no model is loaded)."""
    from seal.bench.knowledge import report_run

    pairs = [tuple(c.strip() for c in p.split(",")) for p in paired]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise SealError("--paired takes two conditions: A,B")
    results = report_run(out_dir, pairs)
    (_show_continual if "strategies" in results else _show)(results, out_dir, as_json)


@bench_app.command("merge")
@cli_errors
def merge(
    out_dir: Path = typer.Option(..., "--out", help="New run folder for the merged run."),
    sources: list[Path] = typer.Argument(..., help="Run folders that split one benchmark: `seal bench knowledge` runs by condition (the settings their conditions use must agree), or `seal bench continual` runs by strategy or ordering (every other setting must agree)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
):
    """Merge runs of one benchmark split over processes or machines into one run folder and its report."""
    from seal.bench import continual, knowledge
    from seal.core.run_records import run_kind

    if sources and run_kind(sources[0]) == continual.RUN_KIND:
        _show_continual(continual.merge_runs(out_dir, sources), out_dir, as_json)
    else:
        _show(knowledge.merge_runs(out_dir, sources), out_dir, as_json)


def _show(results: dict, out_dir: Path, as_json: bool) -> None:
    from seal.bench.knowledge_report import floor_line

    if as_json:
        print(json_text(results))
        return
    cfg = results["config"]
    table = _table(f"knowledge incorporation, {cfg['mode']} mode ({out_dir})",
                   ("condition", "passages", "accuracy %", "95% CI", "EM %", "F1", "reasoning % (base)", "s/trial", "paper %"))
    for name, c in results["conditions"].items():
        lo, hi = c["accuracy_ci95"]
        r, rb = c["reasoning_accuracy"], c["reasoning_accuracy_base"]
        table.add_row(
            name, str(c["n_passages"]), f"{100 * c['accuracy']:.1f}", f"{100 * lo:.1f}-{100 * hi:.1f}",
            f"{100 * c['exact_match']:.1f}", f"{c['f1']:.3f}",
            ("n/a" if r is None else f"{100 * r:.1f}") + ("" if rb is None else f" ({100 * rb:.1f})"),
            f"{c['seconds_per_trial']:.1f}", "" if c["paper_accuracy"] is None else f"{c['paper_accuracy']:.1f}",
        )
    if "accuracy" in (f := results.get("random_sentence") or {}):
        lo, hi = f["accuracy_ci95"]
        table.add_row("random-sentence (floor, no model)", str(f["n_passages"]), f"{100 * f['accuracy']:.1f}",
                      f"{100 * lo:.1f}-{100 * hi:.1f}", f"{100 * f['exact_match']:.1f}", f"{f['f1']:.3f}", "", "", "")
    out.print(table)
    out.print(floor_line(results))
    for d in results.get("paired", []):
        lo, hi = d["ci95"]
        out.print(f"{d['a']} - {d['b']}: {100 * d['difference']:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}) "
                  f"over {d['n_passages']} passages, {d['better']} better / {d['worse']} worse")
    out.print(f"report: {out_dir / 'report.md'}  plot: {out_dir / 'plot.png'}")
