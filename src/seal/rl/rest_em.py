"""The outer loop: ReST-EM (rejection sampling + SFT) teaches the generator to write better
self-edits. Written once against the `Domain` contract (seal.domains): it names no domain's types.

One iteration, as in the paper:
  1. sample k self-edits per training item with the current generator;
  2. score each by the inner loop (reward, averaged over R repeats with seeds derived from
     (iteration, item, self-edit, repeat)), plus the item's baselines (no update; the domain's
     trial without a self-edit, e.g. the passage alone);
  3. keep the best self-edit per item (ties: the earlier sample; `min_gain` can drop items whose
     best does not beat that baseline, `min_reward` those whose best does not reach a reward, e.g.
     ARC's 1.0: only self-edits that solved their task);
  4. fine-tune the generator on (self-edit prompt -> kept self-edit) through the domain, and save
     it as OUT/iter_N (a new link chained on the previous iterations).

Every stage is resumable: samples and trials are JSONL records appended as they finish, and
OUT/iter_N appears (atomic rename) only when its SFT is complete. The golden base is never written.
Sampling (step 1) and the trials (step 2) both go through the executor, so on Ray the workers
sample in parallel too; the driver keeps every record, selection and the SFT.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from seal.core.config import InnerLoopConfig, SamplingConfig, as_json, check_inner
from seal.domains import Domain
from seal.core.environment import environment
from seal.core.metrics import mean, std
from seal.core.plots import figure, moving_average
from seal.core.progress import NullReporter, Reporter
from seal.core.run_records import TrialLog, prepare_run_dir
from seal.core.runtime import RuntimeFailure, UsageError, derive_seed, fsync_tree, json_text
from seal.domains import GENERATOR_MANIFEST


def _sft_defaults() -> InnerLoopConfig:
    return InnerLoopConfig(lora_r=64, lora_alpha=128, lr=3e-4, epochs=2, max_seq_len=1024)


@dataclass
class RestEMConfig:
    """Paper defaults: 2 iterations, k=5 self-edits, 3 repeats, SFT LoRA r=64 alpha=128 lr 3e-4 x2."""

    data: str = "fresh-facts:train"  # training items (never evaluation items)
    n: int | None = None  # items per iteration (None: all)
    exclude: list[str] = field(default_factory=lambda: ["fresh-facts:eval", "fresh-facts:test"])  # eval sets that must not overlap
    iterations: int = 2
    k: int = 5  # self-edits sampled per item
    repeats: int = 3  # inner-loop runs per self-edit (distinct seeds)
    format: str = "implications"
    reward: str = "gold"  # gold | self-questions
    min_gain: float | None = None  # drop items whose best reward - passage-only < min_gain
    min_reward: float | None = None  # drop items whose best mean reward < min_reward
    seed: int = 0
    model: str | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    inner: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    sft: InnerLoopConfig = field(default_factory=_sft_defaults)


@dataclass
class TrialJob:
    key: str
    item_id: str
    sample: int | str  # self-edit index, or the domain's baseline label / "base" (no update)
    repeat: int
    seed: int
    self_edit: str | None


@dataclass
class SampleJob:
    """Sample k self-edits of one item with the current generator; the result is the item's
    samples.jsonl record (with the domain's per-item context for scoring them)."""

    item_id: str
    k: int
    seed: int

    @property
    def key(self) -> str:
        """Executors key every job; an item is sampled once per iteration, so its id is the key."""
        return self.item_id


class Executor(Protocol):
    def run(self, domain: Domain, items: dict[str, Any], jobs: list[TrialJob | SampleJob], contexts: dict[str, dict],
            generator: Sequence[Path] = ()) -> Iterator[tuple[TrialJob | SampleJob, dict]]:
        """Each job's result (`run_job`) with the current generator (its adapter chain, oldest first)."""


class LocalExecutor:
    """Jobs one after another in this process, on the domain's loaded model."""

    def run(self, domain, items, jobs, contexts, generator=()):
        for job in jobs:
            yield job, run_job(domain, items[job.item_id], job, contexts.get(job.item_id, {}), generator)


def run_job(domain: Domain, item: Any, job: TrialJob | SampleJob, context: dict,
            generator: Sequence[Path] = ()) -> dict:
    """One job with the current generator (its adapter chain, oldest first)."""
    if isinstance(job, SampleJob):
        drawn = domain.sample(item, job.k, job.seed, generator=generator)
        return {"key": job.key, "completions": drawn.texts, "sft_pairs": drawn.sft_pairs, **drawn.context}
    if job.sample == "base":
        return domain.no_update(item, context, generator=generator)
    return domain.reward(item, job.self_edit, job.seed, context, generator=generator)


def rewards_by_sample(trials: list[dict], key: str = "reward") -> dict[tuple[str, str], list[float]]:
    """(passage id, sample index or "passage"/"base") -> its rewards over the repeats."""
    by = {}
    for t in trials:
        by.setdefault((t["passage_id"], str(t["sample"])), []).append(t[key])
    return by


def iteration_stats(items: list, trials: list[dict], k: int, baseline: str, key: str = "reward") -> dict:
    """An iteration's reward statistics; `key` picks the reward (e.g. "gold_reward" re-reads trials
    scored by another reward). `baseline` labels the trials without a self-edit; their mean is
    stored as `passage_only_reward`, the knowledge domain's name for it, so records stay comparable."""
    by = rewards_by_sample(trials, key)
    best, beats, within, between = [], 0, [], []
    for p in items:
        rewards = [by.get((p.id, str(j)), []) for j in range(k)]
        means = [mean(r) for r in rewards]
        within += [std(r) for r in rewards if len(r) > 1]  # one repeat shows no spread within a self-edit
        between.append(std(means))
        best.append(max(means))
        beats += max(means) > mean(by.get((p.id, baseline), []))
    samples = [t for t in trials if str(t["sample"]) not in ("base", baseline)]
    return {
        "mean_reward": mean([t[key] for t in samples]),
        "best_of_k_reward": mean(best),
        "passage_only_reward": mean([t[key] for t in trials if t["sample"] == baseline]),
        "base_reward": mean([t[key] for t in trials if t["sample"] == "base"]),
        "share_best_beats_passage": beats / len(items),
        "std_within_self_edit": mean(within) if within else None,
        "std_between_self_edits": mean(between),
        "usable_self_edits": mean([float(bool(t.get("usable"))) for t in samples]),
    }


def select_best(items: list, samples: dict, trials: list[dict], k: int, min_gain: float | None, baseline: str,
                min_reward: float | None = None) -> list[dict]:
    """Best self-edit per item by mean reward over repeats; ties go to the earlier sample."""
    by = rewards_by_sample(trials)
    kept = []
    for p in items:
        means = [mean(by.get((p.id, str(j)), [0.0])) for j in range(k)]
        j = max(range(k), key=lambda i: (means[i], -i))
        base = mean(by.get((p.id, baseline), [0.0]))
        if (min_gain is not None and means[j] - base < min_gain) or (min_reward is not None and means[j] < min_reward):
            continue
        kept.append({"passage_id": p.id, "sample": j, "reward": means[j], "passage_reward": base,
                     "completion": samples[p.id]["completions"][j], "sft_pairs": samples[p.id]["sft_pairs"][j]})
    return kept


RUN_KIND = "rest-em"


SAMPLE_KEYS = ("key", "completions", "sft_pairs")  # a samples.jsonl record; other keys are the domain's context


def trial_seed(root: int, iteration: int, item_id: str, sample: int | str, repeat: int) -> int:
    return derive_seed(root, "rest-em", iteration, item_id, sample, repeat)


def check_config(d: dict) -> RestEMConfig:
    """The RestEMConfig of a ReST-EM run's config.json (fields added since take their defaults);
    KeyError/TypeError if it is not one."""
    if not {"iterations", "k", "sft", "inner"} <= set(d):
        raise KeyError("no iterations, k, sft or inner")
    d = {**d, "sampling": SamplingConfig(**d.get("sampling", {})), "inner": InnerLoopConfig(**d["inner"]),
         "sft": InnerLoopConfig(**d["sft"])}
    return RestEMConfig(**{f.name: d[f.name] for f in fields(RestEMConfig) if f.name in d})


def generator_chain(out: Path, iteration: int) -> list[Path]:
    return [out / f"iter_{i}" for i in range(1, iteration + 1)]


def run_rest_em(domain: Domain, cfg: RestEMConfig, out: Path, executor: Executor | None = None,
                reporter: Reporter | None = None) -> list[dict]:
    """ReST-EM on any domain: `cfg` gives the loop's settings (iterations, k, repeats, min_gain, seed,
    data, n) and is written to OUT/config.json whole; the domain carries everything else."""
    reporter = reporter or NullReporter()
    executor = executor or LocalExecutor()
    check_inner(cfg.inner, "inner loop")
    check_inner(cfg.sft, "generator SFT")
    items = domain.load_items(cfg.data, cfg.n)
    if not items:
        raise UsageError(f"no training items in {cfg.data}")
    domain.validate(items, cfg.k)
    # The driver's environment; Ray workers run jobs with --trial-cpus torch threads each.
    env = {**environment(), "executor": type(executor).__name__}
    prepare_run_dir(out, RUN_KIND, as_json(cfg), False, (), check_config, "ReST-EM", env)
    by_id = {p.id: p for p in items}
    all_stats = []
    for it in range(1, cfg.iterations + 1):
        final = out / f"iter_{it}"
        if (final / GENERATOR_MANIFEST).is_file():
            all_stats.append(json.loads((final / "stats.json").read_text()))
            continue
        t0 = time.perf_counter()
        generator = generator_chain(out, it - 1)  # the current generator: every earlier iteration's link
        work = out / "work" / f"iter_{it}"
        work.mkdir(parents=True, exist_ok=True)
        samples_log = TrialLog(work / "samples.jsonl")
        to_sample = [SampleJob(p.id, cfg.k, derive_seed(cfg.seed, "rest-em-sample", it, p.id))
                     for p in items if p.id not in samples_log.done]
        with reporter.task(f"iteration {it}: sampling k={cfg.k} self-edits", len(to_sample)) as task:
            for _, rec in executor.run(domain, by_id, to_sample, {}, generator):
                samples_log.append(rec)
                task.advance()
        samples = {r["key"]: r for r in samples_log.records}
        contexts = {pid: {k: v for k, v in r.items() if k not in SAMPLE_KEYS} for pid, r in samples.items()}
        jobs = []
        for p in items:
            jobs.append(TrialJob(f"{p.id}|base|0", p.id, "base", 0, 0, None))
            for r in range(cfg.repeats):
                jobs.append(TrialJob(f"{p.id}|{domain.baseline}|{r}", p.id, domain.baseline, r,
                                     trial_seed(cfg.seed, it, p.id, domain.baseline, r), None))
                for j in range(cfg.k):
                    jobs.append(TrialJob(f"{p.id}|{j}|{r}", p.id, j, r, trial_seed(cfg.seed, it, p.id, j, r), samples[p.id]["completions"][j]))
        trials_log = TrialLog(work / "trials.jsonl")
        todo = [j for j in jobs if j.key not in trials_log.done]
        with reporter.task(f"iteration {it}: inner-loop trials", len(todo)) as task:
            for job, result in executor.run(domain, by_id, todo, contexts, generator):
                # "passage_id" names the item's id in trial records (the knowledge domain came first)
                trials_log.append({"key": job.key, "passage_id": job.item_id, "sample": job.sample, "repeat": job.repeat,
                                   "seed": job.seed, **result})
                task.advance(info=f"reward {result['reward']:.2f}")
        trials = [t for t in trials_log.records if t["key"] in {j.key for j in jobs}]
        stats = {"iteration": it, **iteration_stats(items, trials, cfg.k, domain.baseline), **domain.iteration_stats(trials)}
        for name, key in domain.extra_rewards.items():  # the same trials, scored by another reward
            if all(t.get(key) is not None for t in trials):
                stats[name] = iteration_stats(items, trials, cfg.k, domain.baseline, key=key)
        kept = select_best(items, samples, trials, cfg.k, cfg.min_gain, domain.baseline, cfg.min_reward)
        stats["n_kept"] = len(kept)
        if not kept:
            raise RuntimeFailure(f"iteration {it}: no self-edit kept (min_gain {cfg.min_gain}, min_reward {cfg.min_reward}); "
                                 "nothing to fine-tune on")
        sft_pairs = [(pr, c) for k in kept for pr, c in k["sft_pairs"]]
        if not sft_pairs:
            raise RuntimeFailure(f"iteration {it}: the kept self-edits hold nothing to fine-tune the generator on")
        with reporter.task(f"iteration {it}: SFT of the generator on {len(kept)} self-edits", cfg.sft.epochs * len(sft_pairs)) as task:
            tmp = Path(tempfile.mkdtemp(prefix=".iter-", dir=out))
            try:
                tr = domain.fine_tune(sft_pairs, derive_seed(cfg.seed, "sft", it), tmp, generator=generator,
                                      on_step=lambda s, n, loss: task.advance(info=f"loss {loss:.3f}"))
                stats.update(sft_losses=[round(x, 4) for x in tr["losses"]], sft_seconds=round(tr["train_seconds"], 2),
                             seconds=round(time.perf_counter() - t0, 1))
                (tmp / "kept.jsonl").write_text("".join(json_text(k) + "\n" for k in kept), encoding="utf-8")
                (tmp / "stats.json").write_text(json_text(stats, indent=2) + "\n")
                manifest = {**domain.describe(), "iteration": it, "chain": [f"iter_{i}" for i in range(1, it + 1)]}
                (tmp / GENERATOR_MANIFEST).write_text(json_text(manifest, indent=2) + "\n")
                fsync_tree(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        all_stats.append(stats)
    (out / "stats.jsonl").write_text("".join(json_text(s) + "\n" for s in all_stats))
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
