"""`seal bench knowledge`: the paper's knowledge-incorporation table, on your machine.

For each condition (a row of the paper's table) and repeat, every passage is learned by the
inner loop and its questions are asked closed-book:

    single mode: one fresh adapter per passage, discarded after scoring (paper Table 2);
    multi mode:  one adapter trained on all passages' sequences together (continued pretraining).

Every trial is one JSONL record in OUT/trials.jsonl, appended and fsynced as soon as it is done,
so a killed run resumes where it stopped; results.json, report.md and plot.png are recomputed
from the records at the end of every run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from seal.bench.knowledge_report import public_config
from seal.guard.canary import canary_scores
from seal.core.config import InnerLoopConfig, SamplingConfig, check_inner, check_sampling
from seal.domains.knowledge.data import Passage, select_passages
from seal.core.environment import environment
from seal.core.inner_loop import run_inner_loop
from seal.domains.knowledge.judge import LLMJudge
from seal.domains.knowledge.grading import local_grade
from seal.domains.knowledge.qa import evaluate, short_answers
from seal.core.models import LoadedModel, load_model
from seal.core.progress import NullReporter, Reporter
from seal.core.remote import ChatEndpoint
from seal.core.run_records import TrialLog, prepare_run_dir, read_config, read_trials, merge_sources, run_kind, write_merged
from seal.core.runtime import SealError, derive_seed, peak_memory_mb
from seal.domains.knowledge.self_edit import FORMATS, get_format, shown, training_examples
from seal.domains.knowledge.writers import GoldQAWriter, ModelWriter, RemoteWriter, StoredWriter, Writer, writer_seed
from seal.domains import generator_chain, generator_format, is_adapter



@dataclass
class BenchConfig:
    """Everything a benchmark run depends on; written to OUT/config.json."""

    data: str = "fresh-facts:eval"  # bundled name or SEAL-format JSON/JSONL
    n: int | None = None  # passages (None: all)
    offset: int = 0  # start of the slice after the seed-42 shuffle
    conditions: list[str] = field(default_factory=lambda: ["base", "passage", "self-edit:implications"])
    repeats: int = 1  # trials per (passage, condition) with distinct seeds
    mode: str = "single"  # single | multi
    seed: int = 0  # root of every derived seed
    model: str | None = None  # student (inner-loop) model; None = embedded
    canary_sample: int = 2  # single mode: adapters per condition whose general ability is measured
    teacher_model: str | None = None
    teacher_url: str | None = None
    teacher_name: str | None = None
    teacher_file: str | None = None
    teacher_format: str = "implications"
    judge_url: str | None = None
    judge_name: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    inner: InnerLoopConfig = field(default_factory=InnerLoopConfig)


PRESETS: dict[str, dict] = {
    # Finishes in under 30 minutes on a 2-core CPU with the embedded model.
    "quick": {"data": "fresh-facts:eval", "n": 5, "repeats": 1, "conditions": [
        "base", "passage", "self-edit:implications", "self-edit:rewrite", "self-edit:self-qa"]},
    # The paper's evaluation slice and all conditions; meant for a GPU.
    "paper": {"data": "seal-squad:eval", "n": 200, "repeats": 3,
              "conditions": ["base", "passage", "self-edit:implications", "teacher"],
              "teacher_file": "../shared/data/seal/knowledge-incorporation/data/synthetic_data/eval/gpt4_1_val.json"},
}


def parse_condition(name: str) -> tuple[str, str]:
    """'self-edit:rewrite' -> ('self-edit', 'rewrite'); validates the kind and argument."""
    kind, _, arg = name.partition(":")
    if kind in ("base", "passage", "teacher", "gold-qa") and not arg:
        return kind, ""
    if kind == "self-edit":
        get_format(arg or "?")
        return kind, arg
    if kind == "generator" and arg:
        if not Path(arg).is_dir():
            raise SealError(f"condition {name!r}: generator folder {arg} not found")
        return kind, arg
    raise SealError(
        f"unknown condition {name!r} (known: base, passage, teacher, gold-qa, generator:PATH, "
        f"self-edit:FORMAT with FORMAT in {', '.join(FORMATS)})"
    )


def make_writer(kind: str, arg: str, cfg: BenchConfig, student: LoadedModel) -> Writer | None:
    if kind in ("base", "passage"):
        return None
    if kind == "self-edit":
        return ModelWriter(student, get_format(arg), cfg.sampling)
    if kind == "gold-qa":
        return GoldQAWriter()
    if kind == "generator":
        path = Path(arg)
        fmt = get_format(generator_format(path, "implications"))
        if is_adapter(path):
            return ModelWriter(student, fmt, cfg.sampling, adapters=generator_chain(path))
        return ModelWriter(load_model(str(path)), fmt, cfg.sampling)
    fmt = get_format(cfg.teacher_format)
    if cfg.teacher_file:
        return StoredWriter(Path(cfg.teacher_file), fmt, cfg.sampling.min_faithfulness)
    if cfg.teacher_url:
        if not cfg.teacher_name:
            raise SealError("--teacher-url needs --teacher-name (the served model's name)")
        return RemoteWriter(ChatEndpoint(cfg.teacher_url, cfg.teacher_name, cfg.api_key_env), fmt, cfg.sampling)
    if cfg.teacher_model:
        return ModelWriter(load_model(cfg.teacher_model), fmt, cfg.sampling)
    raise SealError("condition 'teacher' needs --teacher-file, --teacher-url or --teacher-model")


def trial_key(passage_id: str, condition: str, repeat: int) -> str:
    return f"{passage_id}|{condition}|{repeat}"


def config_from_json(d: dict) -> BenchConfig:
    """The BenchConfig a run folder's config.json was written from."""
    d = dict(d)
    d["sampling"] = SamplingConfig(**d.get("sampling", {}))
    d["inner"] = InnerLoopConfig(**d.get("inner", {}))
    return BenchConfig(**{f.name: d[f.name] for f in dataclasses.fields(BenchConfig) if f.name in d})


RUN_KIND = "bench-knowledge"
RUN_FILES = ("config.json", "trials.jsonl", "trials.tmp", "results.json", "report.md", "plot.png")  # what a run writes


def check_config(d: dict) -> BenchConfig:
    """A BenchConfig from config.json; KeyError if it lacks what every knowledge run writes."""
    missing = [k for k in ("data", "conditions", "inner") if k not in d]
    if missing:
        raise KeyError(f"no {', '.join(missing)}")
    return config_from_json(d)


def _read_config(out: Path) -> dict:
    return read_config(out, RUN_KIND, check_config, "knowledge benchmark")


def report_run(out: Path, paired: list[tuple[str, str]] = ()) -> dict:
    """Artefacts from the trials a run folder holds so far (a finished, running or killed run),
    with the paired differences (a - b per passage) asked for."""
    from seal.bench.knowledge_report import write_artifacts

    if run_kind(out) == "bench-continual":
        from seal.bench import continual
        from seal.bench import continual_report

        if paired:
            raise SealError("--paired applies to `seal bench knowledge` runs, not continual ones")
        from seal.bench import speed

        cfg = continual.config_from_json(continual.read_run_config(out))
        records = read_trials(out / "trials.jsonl")[0]
        if any(r.get("key") == speed.MACHINE for r in records):  # a `seal bench speed` run: its report too
            speed.write_speed(out, cfg, records)
        return continual_report.write_artifacts(out, cfg, records)
    cfg = config_from_json(_read_config(out))
    return write_artifacts(out, cfg, read_trials(out / "trials.jsonl")[0], paired)


_TEACHER_SETTINGS = {"teacher_model", "teacher_url", "teacher_name", "teacher_file", "teacher_format"}


def settings_unused(condition: str) -> set[str]:
    """The config keys a condition's trials do not depend on. Every other key must agree for runs
    to merge, so a setting added to BenchConfig later is compared unless it is listed here."""
    kind = condition.partition(":")[0]
    unused = {"conditions"} | (set() if kind == "teacher" else _TEACHER_SETTINGS)
    if kind not in ("self-edit", "generator", "teacher"):
        unused.add("sampling")
    if kind == "base":  # no update: one greedy evaluation of the model, the same for any repeats
        unused |= {"repeats", "canary_sample", "inner"}
    return unused


def merge_runs(out: Path, sources: list[Path]) -> dict:
    """One run folder from runs that split a benchmark by condition (one per core or machine).

    The sources must agree on every setting their conditions use (all but `settings_unused`: e.g. the
    sampling settings matter to self-edit conditions, not to base or passage; the teacher's only to
    teacher); the merged config lists their conditions in order of first appearance and takes each
    setting from the first source whose conditions use it, so it is the config of the one command
    that would have run them all (trial seeds depend on passage, condition and repeat, not on the
    other conditions), and `seal bench knowledge` with that command resumes the merged folder. A
    trial found in more than one source is kept once, from the first.
    """
    from seal.bench.knowledge_report import write_artifacts

    confs, envs = merge_sources(out, sources, _read_config)
    merged, owner = {**confs[0], "conditions": []}, {}  # owner: the first source whose conditions use a setting
    for src, conf in zip(sources, confs):
        unused = [settings_unused(c) for c in conf["conditions"]] or [{"conditions"}]
        used = set(conf) - set.intersection(*unused)
        diff = sorted(k for k in used if k in owner and conf.get(k) != merged.get(k))
        if diff:
            others = " and ".join(sorted({str(owner[k]) for k in diff}))
            raise SealError(f"{src} and {others} differ in {', '.join(diff)}, which their conditions use: they do not merge")
        for k in sorted(used - set(owner)):
            merged[k], owner[k] = conf.get(k), src
        merged["conditions"] += [c for c in conf["conditions"] if c not in merged["conditions"]]
    records = write_merged(out, sources, RUN_KIND, merged, envs)
    return write_artifacts(out, config_from_json(merged), records)


def prepare_out(out: Path, cfg: BenchConfig, fresh: bool, env: dict) -> TrialLog:
    """The run folder's trial log. A folder of another config is refused; one resumed on another
    environment (library versions, threads, device) is not, and lists that environment too."""
    prepare_run_dir(out, RUN_KIND, public_config(cfg), fresh, RUN_FILES, check_config, "knowledge benchmark", env)
    return TrialLog(out / "trials.jsonl")


def run_bench(cfg: BenchConfig, out: Path, fresh: bool = False, reporter: Reporter | None = None, lm: LoadedModel | None = None) -> dict:
    from seal.bench.knowledge_report import write_artifacts

    reporter = reporter or NullReporter()
    if cfg.mode not in ("single", "multi"):
        raise SealError(f"unknown mode {cfg.mode!r} (single or multi)")
    check_inner(cfg.inner)
    check_sampling(cfg.sampling)
    conditions = [(c, *parse_condition(c)) for c in cfg.conditions]
    passages = select_passages(cfg.data, cfg.n, cfg.offset)
    if not passages:
        raise SealError(f"no passages selected from {cfg.data} (n={cfg.n}, offset={cfg.offset})")
    if not any(p.questions for p in passages):
        raise SealError(f"{cfg.data}: the selected passages have no questions")
    # a teacher that needs no model (a file, an endpoint) is read and checked before anything is written
    writers: dict[str, Writer | None] = {name: make_writer(kind, arg, cfg, None) for name, kind, arg in conditions
                                         if kind == "teacher" and not cfg.teacher_model}
    log = prepare_out(out, cfg, fresh, environment(lm.model if lm else None))
    lm = lm or load_model(cfg.model)
    judge = LLMJudge(ChatEndpoint(cfg.judge_url, cfg.judge_name or "judge", cfg.api_key_env)) if cfg.judge_url else None

    plan = []  # (condition, kind, arg, repeat, passages of the trial)
    for name, kind, arg in conditions:
        for rep in range(1 if kind == "base" else cfg.repeats):  # greedy evaluation: base is deterministic
            if cfg.mode == "single" or kind == "base":
                plan += [(name, kind, arg, rep, [p]) for p in passages]
            else:
                plan.append((name, kind, arg, rep, passages))
    todo = [t for t in plan if _key(t) not in log.done]
    canaried: dict[str, int] = {}
    for r in log.records:
        if r.get("canary"):
            canaried[r["condition"]] = canaried.get(r["condition"], 0) + 1
    if "base-canary" not in {r["key"] for r in log.records}:
        with reporter.task("canary (general ability) of the base model", 1) as task:
            log.append({"key": "base-canary", "condition": "base", "canary": general_ability(lm)})
            task.advance()
    with reporter.task(f"trials ({len(plan) - len(todo)} of {len(plan)} already done)", len(todo)) as task:
        for name, kind, arg, rep, group in todo:
            if name not in writers:
                writers[name] = make_writer(kind, arg, cfg, lm)
            want_canary = kind != "base" and canaried.get(name, 0) < (cfg.canary_sample if cfg.mode == "single" else 1)
            if len(group) == 1:
                record = run_trial(lm, cfg, name, kind, rep, group, writers[name], judge, want_canary)
            else:  # multi mode: one long trial; its own bar shows where it is
                with reporter.task(f"{name}: one adapter for {len(group)} passages", None) as inner:
                    record = run_trial(lm, cfg, name, kind, rep, group, writers[name], judge, want_canary,
                                       note=lambda text: inner.advance(0, info=text))
            if record["canary"]:
                canaried[name] = canaried.get(name, 0) + 1
            log.append(record)
            task.advance(info=f"{name} {record['accuracy']:.0%}")
    return write_artifacts(out, cfg, log.records)


def recite_then_answer(lm, group: list[Passage]):
    """Closed-book answers (whole recalled sentences, as graded), and the short answer the same
    model then copies out of each of its own answers (so that exact match and F1 mean something)."""
    result = evaluate(lm, group)
    return result, short_answers(lm, [(q.question, q.prediction) for q in result.per_question])


def general_ability(lm) -> dict:
    """What an update cost, measured on the model as it is now: the canary (multiple-choice
    accuracy, margin, perplexity) and the generative general questions (seal.guard.general)."""
    from seal.guard.general import ask_general

    return {**canary_scores(lm), "general_answers": ask_general(lm)}


def _key(t) -> str:
    name, _, _, rep, group = t
    return trial_key(group[0].id if len(group) == 1 else "*", name, rep)


def run_trial(lm, cfg: BenchConfig, name: str, kind: str, rep: int, group: list[Passage], writer, judge, want_canary: bool,
              note: Callable[[str], None] = lambda text: None) -> dict:
    t0 = time.perf_counter()
    pid = group[0].id if len(group) == 1 else "*"
    seed = derive_seed(cfg.seed, "trial", pid, name, rep)
    edits = {}
    for i, p in enumerate(group, 1):
        edits[p.id] = writer.write(p, writer_seed(cfg.seed, p, name, rep)) if writer else []
        if writer:
            note(f"self-edits {i}/{len(group)}")
    generate_seconds = time.perf_counter() - t0
    examples = [ex for p in group for ex in training_examples(lm, p.title, p.context, edits[p.id], include_passage=True)]
    train_info, canary = {}, None
    if kind == "base":
        result, shorts = recite_then_answer(lm, group)
    else:
        def score():
            note("answering the questions")
            return recite_then_answer(lm, group), general_ability(lm) if want_canary else None

        tr, ((result, shorts), canary) = run_inner_loop(lm.model, lm.tokenizer, examples, cfg.inner, seed, evaluate=score,
                                              on_step=lambda step, total, loss: note(f"training step {step}/{total}, loss {loss:.3f}"))
        train_info = {"train_seconds": round(tr.train_seconds, 2), "steps": tr.steps, "n_tokens": tr.n_tokens,
                      "final_loss": round(tr.losses[-1], 4)}
    per_question = []
    for q, short in zip(result.per_question, shorts):
        row = dataclasses.asdict(q)
        g = local_grade(q.question, q.gold, short)
        row.update(short_answer=short, short_exact_match=g.exact_match, short_f1=round(g.f1, 4))
        if judge:
            v = judge(q.question, q.gold, q.prediction)
            row.update(judge_correct=v.correct, judge_raw=v.raw, judge_error=v.error)
        per_question.append(row)
    return {
        "key": trial_key(pid, name, rep), "passage_id": pid, "titles": sorted({p.title for p in group}),
        "condition": name, "repeat": rep, "seed": seed, "mode": cfg.mode,
        "self_edits": [{"passage_id": k, **dataclasses.asdict(e)} for k, es in edits.items() for e in es],
        "sequences": shown(examples), "per_question": per_question,
        "accuracy": result.accuracy, "exact_match": result.exact_match, "f1": result.f1,
        "generate_seconds": round(generate_seconds, 2), **train_info,
        "trial_seconds": round(time.perf_counter() - t0, 2), **peak_memory_mb(), "canary": canary,
    }
