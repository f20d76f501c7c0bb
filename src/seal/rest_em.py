"""The outer loop: ReST-EM (rejection sampling + SFT) teaches the generator to write better
self-edits. Written once against the `Domain` contract.

One iteration, as in the paper:
  1. sample k self-edits per training item with the current generator;
  2. score each by the inner loop (reward, averaged over R repeats with seeds derived from
     (iteration, item, self-edit, repeat)), plus the item's baselines (no update; passage only);
  3. keep the best self-edit per item (ties: the earlier sample; `min_gain` can drop items whose
     best does not beat the passage-only baseline);
  4. SFT the generator on (self-edit prompt -> kept self-edit), loss on the completion only,
     and save it as OUT/iter_N (a LoRA adapter chained on the previous iterations).

Every stage is resumable: samples and trials are JSONL records appended as they finish, and
OUT/iter_N appears (atomic rename) only when its SFT is complete. The golden base is never written.
Sampling (step 1) and the trials (step 2) both go through the executor, so on Ray the workers
sample in parallel too; the driver keeps every record, selection and the SFT.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from .bench import TrialLog
from .config import InnerLoopConfig, SamplingConfig, as_json
from .data import Passage, Question, load_dataset
from .domains.knowledge import KnowledgeDomain, trial_seed
from .environment import add_environment, config_differences, environment
from .inner_loop import TrainExample, applied_adapters, lora_adapter, save_adapter, train
from .metrics import mean, std
from .plots import figure, moving_average
from .progress import NullReporter, Reporter
from .runtime import SealError, derive_seed, fsync_tree
from .self_edit import get_format, resolved_temperature
from .writers import GENERATOR_MANIFEST


def _sft_defaults() -> InnerLoopConfig:
    return InnerLoopConfig(lora_r=64, lora_alpha=128, lr=3e-4, epochs=2, max_seq_len=1024)


@dataclass
class RestEMConfig:
    """Paper defaults: 2 iterations, k=5 self-edits, 3 repeats, SFT LoRA r=64 alpha=128 lr 3e-4 x2."""

    data: str = "fresh-facts:train"  # training items (never evaluation items)
    n: int | None = None  # items per iteration (None: all)
    exclude: list[str] = field(default_factory=lambda: ["fresh-facts:eval"])  # eval sets that must not overlap
    iterations: int = 2
    k: int = 5  # self-edits sampled per item
    repeats: int = 3  # inner-loop runs per self-edit (distinct seeds)
    format: str = "implications"
    reward: str = "gold"  # gold | self-questions
    min_gain: float | None = None  # drop items whose best reward - passage-only < min_gain
    seed: int = 0
    model: str | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    inner: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    sft: InnerLoopConfig = field(default_factory=_sft_defaults)


@dataclass
class TrialJob:
    key: str
    passage_id: str
    sample: int | str  # self-edit index, or "passage" / "base" for the baselines
    repeat: int
    seed: int
    self_edit: str | None


@dataclass
class SampleJob:
    """Sample k self-edits of one item with the current generator (and, for the self-questions
    reward, the model's own questions about it); the result is the item's samples.jsonl record."""

    passage_id: str
    k: int
    seed: int
    self_questions: bool = False

    @property
    def key(self) -> str:
        """Executors key every job; an item is sampled once per iteration, so its id is the key."""
        return self.passage_id


class Executor(Protocol):
    def run(self, domain: KnowledgeDomain, items: dict[str, Passage], jobs: list[TrialJob | SampleJob],
            self_questions: dict) -> Iterator[tuple[TrialJob | SampleJob, dict]]: ...


class LocalExecutor:
    """Jobs one after another in this process, on one loaded model."""

    def run(self, domain, items, jobs, self_questions):
        for job in jobs:
            yield job, run_job(domain, items[job.passage_id], job, self_questions.get(job.passage_id))


def run_job(domain: KnowledgeDomain, item: Passage, job: TrialJob | SampleJob, self_questions: list[Question] | None) -> dict:
    if isinstance(job, SampleJob):
        drawn = domain.sample(item, job.k, job.seed)
        rec = {"key": job.key, "completions": drawn.texts, "sft_pairs": drawn.sft_pairs}
        if job.self_questions:
            rec["self_questions"] = [asdict(q) for q in domain.self_questions(item, job.seed)]
        return rec
    if job.sample == "base":
        return domain.no_update(item)
    return domain.reward(item, job.self_edit, job.seed, self_questions)


def check_no_overlap(items: list[Passage], exclude: list[str]) -> None:
    train_hashes = {p.sha256 for p in items}
    for spec in exclude:
        try:
            held_out = load_dataset(spec)
        except SealError:
            if Path(spec).exists() or ":" in spec:
                raise
            continue
        overlap = train_hashes & {p.sha256 for p in held_out}
        if overlap:
            raise SealError(f"{len(overlap)} training passage(s) also appear in the evaluation set {spec}; refusing to train on them")


def rewards_by_sample(trials: list[dict], key: str = "reward") -> dict[tuple[str, str], list[float]]:
    """(passage id, sample index or "passage"/"base") -> its rewards over the repeats."""
    by = {}
    for t in trials:
        by.setdefault((t["passage_id"], str(t["sample"])), []).append(t[key])
    return by


def iteration_stats(items: list[Passage], trials: list[dict], k: int, key: str = "reward") -> dict:
    """An iteration's reward statistics; `key` picks the reward ("gold_reward" re-reads trials
    scored by self-questions with the gold questions)."""
    by = rewards_by_sample(trials, key)
    best, beats, within, between, selfq, gold = [], 0, [], [], [], []
    for p in items:
        rewards = [by.get((p.id, str(j)), []) for j in range(k)]
        means = [mean(r) for r in rewards]
        within += [std(r) for r in rewards if len(r) > 1]  # one repeat shows no spread within a self-edit
        between.append(std(means))
        best.append(max(means))
        passage = mean(by.get((p.id, "passage"), []))
        beats += max(means) > passage
    for t in trials:
        if t.get("self_question_reward") is not None and t.get("gold_reward") is not None:
            selfq.append(t["self_question_reward"])
            gold.append(t["gold_reward"])
    samples = [t for t in trials if str(t["sample"]) not in ("base", "passage")]
    return {
        "mean_reward": mean([t[key] for t in samples]),
        "best_of_k_reward": mean(best),
        "passage_only_reward": mean([t[key] for t in trials if t["sample"] == "passage"]),
        "base_reward": mean([t[key] for t in trials if t["sample"] == "base"]),
        "share_best_beats_passage": beats / len(items),
        "std_within_self_edit": mean(within) if within else None,
        "std_between_self_edits": mean(between),
        "usable_self_edits": mean([float(bool(t.get("usable"))) for t in samples]),
        "self_question_gold_correlation": pearson(selfq, gold),
    }


def pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    mx, my = mean(x), mean(y)
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return None if sx == 0 or sy == 0 else sum((a - mx) * (b - my) for a, b in zip(x, y)) / (sx * sy)


def select_best(items: list[Passage], samples: dict, trials: list[dict], k: int, min_gain: float | None) -> list[dict]:
    """Best self-edit per item by mean reward over repeats; ties go to the earlier sample."""
    by = rewards_by_sample(trials)
    kept = []
    for p in items:
        means = [mean(by.get((p.id, str(j)), [0.0])) for j in range(k)]
        j = max(range(k), key=lambda i: (means[i], -i))
        passage = mean(by.get((p.id, "passage"), [0.0]))
        if min_gain is not None and means[j] - passage < min_gain:
            continue
        kept.append({"passage_id": p.id, "sample": j, "reward": means[j], "passage_reward": passage,
                     "completion": samples[p.id]["completions"][j], "sft_pairs": samples[p.id]["sft_pairs"][j]})
    return kept


def generator_chain(out: Path, iteration: int) -> list[Path]:
    return [out / f"iter_{i}" for i in range(1, iteration + 1)]


def run_rest_em(cfg: RestEMConfig, out: Path, lm=None, executor: Executor | None = None, reporter: Reporter | None = None) -> list[dict]:
    from .models import load_model

    reporter = reporter or NullReporter()
    executor = executor or LocalExecutor()
    if cfg.k > 1 and resolved_temperature(cfg.sampling.temperature, get_format(cfg.format)) == 0:
        raise SealError(f"format {cfg.format!r} samples greedily, so its k={cfg.k} self-edits would be identical; "
                        "set a sampling temperature (e.g. --temperature 1.0)")
    out.mkdir(parents=True, exist_ok=True)
    conf_path = out / "config.json"
    old = json.loads(conf_path.read_text()) if conf_path.exists() else None
    if old is not None and (diff := config_differences(old, as_json(cfg))):
        raise SealError(f"{out} holds a ReST-EM run with a different config ({', '.join(diff)} differ); use another --out")
    # The driver's environment; Ray workers run trials with --trial-cpus torch threads each.
    env = {**environment(lm.model if lm else None), "executor": type(executor).__name__}
    conf_path.write_text(json.dumps(add_environment(as_json(cfg), env, old), indent=2) + "\n")
    lm = lm or load_model(cfg.model)
    domain = KnowledgeDomain(lm, cfg.format, cfg.sampling, cfg.inner, reward_source=cfg.reward)
    items = domain.load_items(cfg.data, cfg.n)
    check_no_overlap(items, cfg.exclude)
    if cfg.reward == "gold" and not any(p.questions for p in items):
        raise SealError(f"{cfg.data} has no questions; use --reward self-questions")
    by_id = {p.id: p for p in items}
    all_stats = []
    for it in range(1, cfg.iterations + 1):
        final = out / f"iter_{it}"
        if (final / GENERATOR_MANIFEST).is_file():
            all_stats.append(json.loads((final / "stats.json").read_text()))
            continue
        t0 = time.perf_counter()
        domain.generator = generator_chain(out, it - 1)
        work = out / "work" / f"iter_{it}"
        work.mkdir(parents=True, exist_ok=True)
        samples_log = TrialLog(work / "samples.jsonl")
        to_sample = [SampleJob(p.id, cfg.k, derive_seed(cfg.seed, "rest-em-sample", it, p.id), cfg.reward == "self-questions")
                     for p in items if p.id not in samples_log.done]
        with reporter.task(f"iteration {it}: sampling k={cfg.k} self-edits", len(to_sample)) as task:
            for _, rec in executor.run(domain, by_id, to_sample, {}):
                samples_log.append(rec)
                task.advance()
        samples = {r["key"]: r for r in samples_log.records}
        selfq = {pid: [Question(**q) for q in r.get("self_questions", [])] for pid, r in samples.items()}
        jobs = []
        for p in items:
            jobs.append(TrialJob(f"{p.id}|base|0", p.id, "base", 0, 0, None))
            for r in range(cfg.repeats):
                jobs.append(TrialJob(f"{p.id}|passage|{r}", p.id, "passage", r, trial_seed(cfg.seed, it, p.id, "passage", r), None))
                for j in range(cfg.k):
                    jobs.append(TrialJob(f"{p.id}|{j}|{r}", p.id, j, r, trial_seed(cfg.seed, it, p.id, j, r), samples[p.id]["completions"][j]))
        trials_log = TrialLog(work / "trials.jsonl")
        todo = [j for j in jobs if j.key not in trials_log.done]
        with reporter.task(f"iteration {it}: inner-loop trials", len(todo)) as task:
            for job, result in executor.run(domain, by_id, todo, selfq):
                trials_log.append({"key": job.key, "passage_id": job.passage_id, "sample": job.sample, "repeat": job.repeat,
                                   "seed": job.seed, **result})
                task.advance(info=f"reward {result['reward']:.2f}")
        trials = [t for t in trials_log.records if t["key"] in {j.key for j in jobs}]
        stats = {"iteration": it, **iteration_stats(items, trials, cfg.k)}
        if cfg.reward != "gold" and all(t.get("gold_reward") is not None for t in trials):
            gold = iteration_stats(items, trials, cfg.k, key="gold_reward")  # the same trials, scored by the gold questions
            stats["gold"] = {name: v for name, v in gold.items() if name != "self_question_gold_correlation"}
        kept = select_best(items, samples, trials, cfg.k, cfg.min_gain)
        stats["n_kept"] = len(kept)
        if not kept:
            raise SealError(f"iteration {it}: no self-edit kept (min_gain {cfg.min_gain}); nothing to fine-tune on")
        sft_examples = [TrainExample(c, prompt=pr) for k in kept for pr, c in k["sft_pairs"]]
        if not sft_examples:
            raise SealError(f"iteration {it}: the kept self-edits hold nothing to fine-tune the generator on")
        with reporter.task(f"iteration {it}: SFT of the generator on {len(kept)} self-edits", cfg.sft.epochs * len(sft_examples)) as task:
            tmp = Path(tempfile.mkdtemp(prefix=".iter-", dir=out))
            try:
                with applied_adapters(lm.model, domain.generator), lora_adapter(lm.model, cfg.sft, derive_seed(cfg.seed, "sft", it)) as pm:
                    tr = train(pm, lm.tokenizer, sft_examples, cfg.sft,
                               derive_seed(cfg.seed, "sft", it), on_step=lambda s, n, loss: task.advance(info=f"loss {loss:.3f}"))
                    save_adapter(pm, tmp)
                stats.update(sft_losses=[round(x, 4) for x in tr.losses], sft_seconds=round(tr.train_seconds, 2),
                             seconds=round(time.perf_counter() - t0, 1))
                (tmp / "kept.jsonl").write_text("".join(json.dumps(k) + "\n" for k in kept))
                (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
                (tmp / GENERATOR_MANIFEST).write_text(json.dumps({
                    "format": cfg.format, "iteration": it, "chain": [f"iter_{i}" for i in range(1, it + 1)],
                    "base_sha256": lm.checksum}, indent=2) + "\n")
                fsync_tree(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        all_stats.append(stats)
    (out / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in all_stats))
    render_plot(all_stats, out / "plot.png")
    return all_stats


REWARD_LINES = (("best_of_k_reward", "best of k"), ("mean_reward", "mean of the samples"),
                ("passage_only_reward", "passage only"), ("base_reward", "no update"))


def render_plot(stats: list[dict], path: Path) -> None:
    """Rewards per iteration (best of k, mean, the baselines; gold-scored too when the reward was
    self-questions) and each iteration's SFT loss, smoothed over a twentieth of its steps."""
    its = [s["iteration"] for s in stats]
    gold = all("gold" in s for s in stats)
    with figure(path, 2, (11, 4)) as (ax1, ax2):
        for key, label in REWARD_LINES:
            line, = ax1.plot(its, [s[key] for s in stats], marker="o", label=label)
            if gold:
                ax1.plot(its, [s["gold"][key] for s in stats], marker="x", linestyle="--", color=line.get_color(), label=f"{label} (gold)")
        ax1.set(xticks=its, xlabel="iteration", ylabel="reward (closed-book accuracy)", ylim=(-0.02, 1.02), title="rewards of the sampled self-edits")
        ax1.legend(fontsize="small")
        for s in stats:
            window = max(1, len(s["sft_losses"]) // 20)
            ax2.plot(range(1, len(s["sft_losses"]) + 1), moving_average(s["sft_losses"], window),
                     label=f"iteration {s['iteration']} (mean of {window} steps)")
        ax2.set(xlabel="SFT step", ylabel="loss", title="SFT of the generator on the kept self-edits")
        ax2.legend(fontsize="small")
