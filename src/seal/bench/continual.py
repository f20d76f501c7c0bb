"""`seal bench continual`: learn N passages one after another and measure what is kept.

For each strategy (a `seal learn` recipe, see `parse_strategy`) and each of S seeded orderings of
the passages, a fresh knowledge store learns the passages in order with the real `seal learn`
code. After every edit the head is asked, closed-book, the questions of every passage learned so
far (one row of the lower-triangular accuracy matrix), the general questions (seal.guard.general), and
the canary (multiple-choice accuracy and margin, held-out perplexity).

Every edit is one fsynced record in OUT/trials.jsonl (the knowledge benchmark's TrialLog); the
stores live in OUT/stores/STRATEGY/seqS. A killed run resumes: finished edits are skipped, and an
edit whose version was committed (or renamed into place, not yet listed) but whose record was lost
is measured without relearning; which passages a store holds is read from its versions' documents
(`committed_version`), never from their count. A
run grows: more strategies or orderings asked later on the same folder join it (`grown_config`).
Orderings or strategies run in separate folders (`--only-sequence`, one process per core or
machine) join into one with `merge_runs` (`seal bench merge`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from seal.domains.knowledge.data import select_passages
from seal.guard.canary import canary_scores
from seal.core.config import GuardConfig, InnerLoopConfig, LearnConfig, SamplingConfig, as_json
from seal.guard.general import ask_general, general_summary, load_general
from seal.core.inner_loop import check_target_modules
from seal.domains.knowledge.qa import evaluate
from seal.learn import STRATEGIES, WRITERS, check_config, learn
from seal.core.models import LoadedModel, load_model
from seal.core.progress import NullReporter, Reporter
from seal.core.environment import ENVIRONMENTS, environment
from seal.core.run_records import MARKER, TrialLog, prepare_run_dir, merge_sources, read_config, write_merged
from seal.core.runtime import SealError, UsageError, derive_seed, write_json_atomic
from seal.domains.knowledge.self_edit import get_format
from seal.core.store import KnowledgeStore

BENCHMARK = "continual"  # config.json key that tells `seal bench report` which report to write
RUN_KIND = "bench-continual"
RUN_FILES = ("config.json", "trials.jsonl", "trials.tmp", "results.json", "report.md", "plot.png", "heatmap_*.png", "stores",
             "speed.json", "speed.md", "speed.png")  # the last three: `seal bench speed` (seal.bench.speed)


@dataclass
class ContinualConfig:
    """Everything a continual run depends on; written to OUT/config.json."""

    benchmark: str = BENCHMARK
    data: str = "fresh-facts:eval"  # bundled name or SEAL-format JSON/JSONL
    n: int = 8  # passages learned one after another
    offset: int = 0  # start of the slice (after the paper's seed-42 shuffle for SEAL JSON lists)
    sequences: int = 1  # seeded orderings of the passages
    strategies: list[str] = field(default_factory=lambda: ["stack", "replay", "consolidate"])
    seed: int = 0  # root of the orderings and of every learn's seed
    model: str | None = None  # None: the embedded model
    learn: LearnConfig = field(default_factory=LearnConfig)  # the recipe each strategy starts from
    # also learn each passage alone into a fresh store (per strategy), so that what a later edit
    # learns can be compared with what the same passage reaches on its own
    alone: bool = False


def _on_off(v: str) -> bool:
    return {"on": True, "off": False}[v]  # KeyError: reported as "cannot be"


_OPTIONS = {  # option name in a strategy spec -> (where in LearnConfig, parser)
    "lr": ("inner.lr", float),
    "epochs": ("inner.epochs", int),
    "stop-loss": ("inner.stop_loss", float),
    "stop-recalled": ("inner.stop_recalled", _on_off),
    "min-epochs": ("inner.min_epochs", int),
    "mix": ("inner.mix_rehearsal", _on_off),
    "batch": ("inner.batch_size", int),
    "replay": ("replay", int),
    "writer": ("writer", str),
    "anchors": ("anchors", int),
    "anchor-loss": ("anchor_loss", str),
    "anchor-topk": ("anchor_topk", int),
    "anchor-weight": ("anchor_weight", float),
    "anchor-focus": ("anchor_focus", float),
    "replay-weight": ("replay_weight", float),
    "prose": ("prose", int),
    "prose-weight": ("prose_weight", float),
    "r": ("inner.lora_r", int),
    "alpha": ("inner.lora_alpha", float),
    "modules": ("inner.target_modules", lambda v: tuple(v.split("+"))),
    "layers": ("inner.lora_layers", int),
    "guard": ("guard.enabled", _on_off),
}


def parse_strategy(spec: str, base: LearnConfig) -> LearnConfig:
    """'replay:lr=1e-3:writer=base' -> the LearnConfig of that recipe (base with these changes)."""
    name, *opts = spec.split(":")
    cfg = dataclasses.replace(base, inner=dataclasses.replace(base.inner), sampling=dataclasses.replace(base.sampling),
                              guard=dataclasses.replace(base.guard), strategy=name)
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in _OPTIONS:
            raise SealError(f"strategy {spec!r}: bad option {opt!r} (options: {', '.join(k + '=V' for k in _OPTIONS)})")
        path, cast = _OPTIONS[key]
        try:
            v = cast(value)
        except (ValueError, KeyError):
            raise SealError(f"strategy {spec!r}: {key} cannot be {value!r}") from None
        if cast is float and not (v > 0 and v < float("inf")):
            raise SealError(f"strategy {spec!r}: {key} must be a positive finite number")
        section, _, attr = path.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, attr, v)
    try:
        check_config(cfg)
    except SealError as e:
        raise SealError(f"strategy {spec!r}: {e} (a strategy is NAME[:OPTION=V...], NAME in {', '.join(STRATEGIES)}, "
                        f"writer in {', '.join(WRITERS)})") from None
    if cfg.inner.epochs < 1:
        raise SealError(f"strategy {spec!r}: epochs must be >= 1")
    return cfg


def config_from_json(d: dict) -> ContinualConfig:
    d = dict(d)
    learn_d = dict(d.get("learn", {}))
    learn_d["sampling"] = SamplingConfig(**learn_d.get("sampling", {}))
    inner = dict(learn_d.get("inner", {}))
    if "target_modules" in inner:
        inner["target_modules"] = tuple(inner["target_modules"])
    learn_d["inner"] = InnerLoopConfig(**inner)
    # runs written before the guard existed learned without it, and resume that way
    guard = dict(learn_d.get("guard", {"enabled": False}))
    if "scales" in guard:
        guard["scales"] = tuple(guard["scales"])
    learn_d["guard"] = GuardConfig(**guard)
    d["learn"] = LearnConfig(**learn_d)
    return ContinualConfig(**{f.name: d[f.name] for f in dataclasses.fields(ContinualConfig) if f.name in d})


def check_run_config(d: dict) -> ContinualConfig:
    """The ContinualConfig of a config.json; KeyError if it lacks what every continual run writes."""
    if not {"benchmark", "strategies", "learn"} <= set(d):
        raise KeyError("no benchmark, strategies or learn")
    return config_from_json(d)


def ordering(ids: list[str], cfg: ContinualConfig, sequence: int) -> list[str]:
    """Sequence 0 keeps the data order; the others are seeded shuffles. Same for every strategy."""
    order = list(ids)
    if sequence:
        random.Random(derive_seed(cfg.seed, "order", sequence)).shuffle(order)
    return order


def strategy_dir(out: Path, strategy: str) -> Path:
    return out / "stores" / re.sub(r"[^A-Za-z0-9_.=-]+", "_", strategy)


def store_dir(out: Path, strategy: str, sequence: int) -> Path:
    return strategy_dir(out, strategy) / f"seq{sequence}"


def edit_key(strategy: str, sequence: int, step: int) -> str:
    return f"{strategy}|{sequence}|{step}"


def alone_key(strategy: str, passage_id: str) -> str:
    return f"alone|{strategy}|{passage_id}"


def measure(lm: LoadedModel, passages, base_general: list[dict] | None, documents: list[str], general_qs,
            adapters: list[Path] = ()) -> dict:
    """Closed-book accuracy per passage, general questions and canary of the model with `adapters`."""
    result = evaluate(lm, passages, adapters=adapters)
    row = result.by_passage()
    answers = ask_general(lm, general_qs, adapters=adapters)
    canary = canary_scores(lm, adapters)
    return {
        "row": {p.id: round(row.get(p.id, 0.0), 4) for p in passages},
        "predictions": {p.id: [q.prediction for q in result.per_question if q.passage_id == p.id] for p in passages},
        "general": general_summary(answers, base_general or answers, documents, general_qs),
        "general_answers": answers,
        "canary": canary,
    }


def grown_config(out: Path, cfg: ContinualConfig) -> ContinualConfig:
    """A run folder may grow: strategies or orderings asked later join it when every other setting
    agrees. The folder's config.json then lists the union, and its report covers all of them."""
    path = out / "config.json"
    if not path.is_file():
        return cfg
    try:
        old = json.loads(path.read_text())
        # read as the config it parses into, so that a field added since (at its default) is no difference
        settings = as_json(check_run_config({k: v for k, v in old.items() if k not in (MARKER, ENVIRONMENTS)}))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return cfg  # prepare_out says what is wrong with it
    if old.get("benchmark") != BENCHMARK or _fixed(settings) != _fixed(as_json(cfg)):
        return cfg  # prepare_run_dir refuses it with the list of differences
    union = _union(cfg, old, as_json(cfg))
    kept = {k: old[k] for k in (MARKER, ENVIRONMENTS) if k in old}
    if {**kept, **as_json(union)} != old:
        write_json_atomic(path, {**kept, **as_json(union)})
    return union


GROWS = ("strategies", "sequences", "alone")  # what runs of one benchmark may differ in and still join


def _fixed(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in GROWS}


def _union(cfg: ContinualConfig, *runs: dict) -> ContinualConfig:
    """cfg holding every strategy of the runs' configs (in order of first appearance), every ordering, and alone if any."""
    strategies = []
    for run in runs:
        strategies += [x for x in run["strategies"] if x not in strategies]
    return dataclasses.replace(cfg, strategies=strategies, sequences=max(run["sequences"] for run in runs),
                               alone=any(run.get("alone", False) for run in runs))


def merge_runs(out: Path, sources: list[Path]) -> dict:
    """One run folder from continual runs of one benchmark split by strategy or ordering (`--only-sequence`),
    e.g. one process per core or machine.

    The sources must agree on every setting but those a run may grow by (strategies, orderings, alone);
    the merged config is their union, the config of the one command that would have run them all (an
    edit's seeds depend on its recipe, its passage and its place in the chain, not on the ordering's
    index nor on the other strategies). An edit found in more than one source is kept once, from the
    first; the golden copy's record likewise. OUT gets the records and the report, not the stores: an
    ordering left unfinished in a source is finished there and merged again.
    """
    from seal.bench.continual_report import write_artifacts

    confs, envs = merge_sources(out, sources, read_run_config)
    cfgs = [check_run_config(c) for c in confs]
    settings = [as_json(c) for c in cfgs]  # each read as the config it parses into: a field added since is at its default
    first = _fixed(settings[0])
    for src, conf in zip(sources[1:], settings[1:]):
        diff = sorted(k for k, v in _fixed(conf).items() if first.get(k) != v)
        if diff:
            raise SealError(f"{src} and {sources[0]} differ in {', '.join(diff)}: they are not one benchmark and do not merge")
    merged = _union(cfgs[0], *settings)
    records = write_merged(out, sources, RUN_KIND, as_json(merged), envs)
    return write_artifacts(out, merged, records)


def read_run_config(out: Path) -> dict:
    """config.json of a continual run folder (without its marker), or a one-line error."""
    return read_config(out, RUN_KIND, check_run_config, "continual benchmark")


def run_continual(cfg: ContinualConfig, out: Path, fresh: bool = False, reporter: Reporter | None = None,
                  lm: LoadedModel | None = None, only: list[int] | None = None, interleave: bool = False,
                  first: tuple[dict, ...] = ()) -> dict:
    """Run (or resume) every edit of `cfg` in `out`; `only`: just these orderings (0-based, each < cfg.sequences),
    so that the orderings of one run can be split over processes or machines and joined by `merge_runs`.
    `interleave`: the strategies take turns, edit by edit (what `seal bench speed` times: a load that comes
    and goes on a shared machine then falls on every recipe alike), instead of one chain after another.
    `first`: records (each with its own key) written once, after the golden copy's and before any edit,
    so that a run killed midway holds them (`seal bench speed`'s machine record)."""
    from seal.bench.continual_report import write_artifacts

    reporter = reporter or NullReporter()
    recipes = {s: parse_strategy(s, cfg.learn) for s in cfg.strategies}
    if not recipes:
        raise SealError("no strategies given")
    if len(set(cfg.strategies)) != len(cfg.strategies):
        raise SealError(f"a strategy is listed twice: {', '.join(cfg.strategies)}")
    if cfg.n < 1 or cfg.sequences < 1:
        raise SealError("--n and --sequences must be >= 1")
    if only is not None and not (only and all(0 <= q < cfg.sequences for q in only)):
        raise SealError(f"--only-sequence must name orderings from 0 to {cfg.sequences - 1} (--sequences {cfg.sequences})")
    get_format(cfg.learn.format)
    passages = select_passages(cfg.data, cfg.n, cfg.offset)
    if len(passages) < cfg.n:
        raise SealError(f"{cfg.data} has {len(passages)} passages from offset {cfg.offset}, fewer than --n {cfg.n}")
    if not all(p.questions for p in passages):
        raise SealError(f"{cfg.data}: every passage needs questions to measure what is kept")
    by_id = {p.id: p for p in passages}
    whole = cfg if fresh else grown_config(out, cfg)  # what the folder holds; cfg is what this command runs
    lm = lm or load_model(cfg.model)
    for spec, recipe in recipes.items():  # a module the model lacks: refused before the run folder is written
        try:
            check_target_modules(lm.model, recipe.inner.target_modules)
        except SealError as e:
            raise UsageError(f"strategy {spec!r}: {e}") from None
    prepare_run_dir(out, RUN_KIND, as_json(whole), fresh, RUN_FILES, check_run_config, "continual benchmark", environment())
    log = TrialLog(out / "trials.jsonl")
    general_qs = load_general()

    if "base" not in log.done:  # the golden copy: the reference for general questions and canary
        with reporter.task("golden copy: passages, general questions, canary", 1) as task:
            m = measure(lm, passages, None, [], general_qs)
            log.append({"key": "base", "strategy": "base", **m})
            task.advance()
    base = next(r for r in log.records if r["key"] == "base")
    for record in first:
        if record["key"] not in log.done:
            log.append(record)

    plan = [(s, q, r) for s in cfg.strategies for q in range(cfg.sequences) if only is None or q in only for r in range(cfg.n)]
    if interleave:
        plan.sort(key=lambda t: (t[1], t[2]))  # stable: the strategies' order within each step
    todo = [t for t in plan if edit_key(*t) not in log.done]
    with reporter.task(f"edits ({len(plan) - len(todo)} of {len(plan)} already done)", len(todo)) as task:
        for strategy, seq, step in todo:
            order = ordering([p.id for p in passages], cfg, seq)
            store = KnowledgeStore(store_dir(out, strategy, seq))
            record = run_edit(lm, store, recipes[strategy], [by_id[i] for i in order], step, base["general_answers"], general_qs)
            log.append({"key": edit_key(strategy, seq, step), "strategy": strategy, "sequence": seq, "step": step,
                        "order": order, **record})
            task.advance(info=f"{strategy} seq {seq} step {step}: {record['row'][order[step]]:.0%} just learned")
    if cfg.alone:
        todo = [(s, p) for s in cfg.strategies for p in passages if alone_key(s, p.id) not in log.done]
        with reporter.task("each passage alone, in a fresh store", len(todo)) as task:
            for strategy, p in todo:
                log.append({"key": alone_key(strategy, p.id), "strategy": strategy, "alone": True, "passage_id": p.id,
                            **learn_alone(lm, out, recipes[strategy], p, strategy, log.records)})
                task.advance(info=f"{strategy} {p.id}: {log.records[-1]['accuracy']:.0%}")
    return write_artifacts(out, whole, log.records)


def learn_alone(lm: LoadedModel, out: Path, recipe: LearnConfig, passage, strategy: str, records: list[dict]) -> dict:
    """The passage learned into a fresh store, and its closed-book accuracy there. An ordering that
    learned it first already did exactly this (same empty store, same seed): its record is reused."""
    first = next((r for r in records if r.get("strategy") == strategy and r.get("step") == 0
                  and r["passage_id"] == passage.id), None)
    if first is not None:
        return {"accuracy": first["row"][passage.id], "from": first["key"]}
    store = KnowledgeStore(strategy_dir(out, strategy) / "alone" / passage.id)
    version = committed_version(store, [passage], 0)  # a killed run may have committed it already
    if version is None:
        learn(lm, store, [dataclasses.replace(passage, questions=[])], recipe, source=f"continual-alone:{passage.id}")
        version = max(store.state()["versions"])
    result = evaluate(lm, [passage], adapters=store.adapter_dirs())
    manifest = store.manifest(version)
    return {"accuracy": round(result.by_passage().get(passage.id, 0.0), 4),
            "guard": (manifest.get("guard") or {}).get("decision"), "epochs_run": manifest["metrics"].get("epochs_run"),
            **manifest["timings"]}


def committed_version(store: KnowledgeStore, order, step: int) -> int | None:
    """The version of `store` that learned passage `step` of `order`, or None while none has.

    The store must hold one version for each passage before it (and at most this one more), told
    by the documents each version learned, not by a count: a run killed between a version's rename
    and its commit leaves it unlisted, the lock adopts it as inactive, and it is resumed as what it
    is, this passage's edit, made head as its commit would have (unless the guard rejected it)."""
    by_passage: dict[str, list[int]] = {}
    if store.exists:
        with store.lock():
            for m in store.manifests():
                by_passage.setdefault(",".join(str(d.get("id")) for d in m["documents"]), []).append(m["version"])
            expected = [p.id for p in order[: step + 1]]
            done = [i for i in expected if i in by_passage]
            if set(by_passage) - set(expected) or done not in (expected[:step], expected) or any(len(vs) > 1 for vs in by_passage.values()):
                raise SealError(f"store {store.root} holds versions of {', '.join(sorted(by_passage))}; expected one version "
                                f"for each of the first {step} (or {step + 1}) passages of this ordering ({', '.join(expected)}); "
                                "delete it or use --fresh")
            version = by_passage.get(order[step].id, [None])[0]
            if version is not None and store.head != version and (store.manifest(version).get("guard") or {}).get("decision") != "rejected":
                store.rollback(version)
            return version
    if step:
        raise SealError(f"store {store.root} is missing or empty, but {step} passage(s) of this ordering were learned; use --fresh")
    return None


def run_edit(lm: LoadedModel, store: KnowledgeStore, recipe: LearnConfig, order, step: int,
             base_general: list[dict], general_qs) -> dict:
    """Learn passage `step` of `order` into the store (unless a killed run already committed it) and measure."""
    version = committed_version(store, order, step)
    resumed = version is not None
    t0 = time.perf_counter()
    if not resumed:
        # The passage's questions are asked below, after the edit; learn() need not ask them too.
        learn(lm, store, [dataclasses.replace(order[step], questions=[])], recipe, source=f"continual:{order[step].id}")
        version = max(store.state()["versions"])  # this edit's version, even when the guard rejected it
    edit_seconds = time.perf_counter() - t0
    manifest = store.manifest(version)
    guard = manifest.get("guard") or {}
    seen = order[: step + 1]
    m = measure(lm, seen, base_general, [p.context for p in seen], general_qs, store.adapter_dirs())
    timings = manifest["timings"]
    return {
        "passage_id": order[step].id, "version": manifest["version"], "resumed": resumed, **m,
        "edit_seconds": round(timings["generate_seconds"] + timings["train_seconds"] if resumed else edit_seconds, 2),
        **timings, "epochs_run": manifest["metrics"].get("epochs_run"),
        "new_losses": manifest["metrics"].get("new_losses"), "final_loss": manifest["metrics"]["final_loss"],
        **{k: manifest["metrics"][k] for k in ("recalled", "trained_tokens", "input_tokens") if k in manifest["metrics"]},
        "n_examples": len(manifest.get("training_examples", [])), "rehearsal": manifest.get("rehearsal", {}),
        "n_inherited": len(manifest.get("inherited_examples", [])), **manifest["memory"],
        "guard": guard.get("decision"), "guard_scale": guard.get("scale"), "guard_seconds": guard.get("seconds"),
    }
