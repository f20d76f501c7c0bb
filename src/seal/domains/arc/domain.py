"""The few-shot ARC domain for the outer loop: a task, a self-edit configuring test-time training
for it, and whether the adapted model then solves the task (the reward, 0 or 1).

`run_rest_em(ArcDomain(lm), cfg, out)` runs the paper's ARC experiment: sample k JSON self-edits
per training task, score each by TTT (ttt.py), keep the best per task (with `cfg.min_reward` 1.0,
as `seal arc train` sets it: only one that solved the task), and fine-tune the generator on
(self-edit prompt -> kept self-edit). The trial without a
self-edit ("default-ttt") runs TTT with the fixed default configuration; "base" answers in context.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

from seal.core.config import InnerLoopConfig, SamplingConfig
from seal.core.generation import Sampling, render_prompt
from seal.core.inner_loop import TrainExample, run_inner_loop
from seal.core.models import LoadedModel
from seal.core.runtime import UsageError, derive_seed
from seal.domains import Samples
from seal.domains.arc.grids import ArcTask, pair_text
from seal.domains.arc.self_edit import PREFILL, ArcSelfEdit, check_decoding, parse_arc_self_edit, sample_by_choices, self_edit_instruction
from seal.domains.arc.tasks import Skipped, check_no_overlap, held_out_of, select_tasks, within_budget
from seal.domains.arc.ttt import DEFAULT_EDIT, TTTConfig, answer, run_ttt


def _arc_sft() -> InnerLoopConfig:
    return InnerLoopConfig(lora_r=64, lora_alpha=128, lr=3e-4, epochs=2, max_seq_len=2048)


@dataclass
class ArcDomain:
    lm: LoadedModel
    ttt: TTTConfig = field(default_factory=TTTConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=1.0, max_new_tokens=80))
    sft: InnerLoopConfig = field(default_factory=_arc_sft)  # the generator's fine-tuning
    exclude: list[str] | None = None  # evaluation sets training tasks must not overlap (None: the spec's own)
    default_edit: ArcSelfEdit = field(default_factory=lambda: DEFAULT_EDIT)  # the configuration when there is no self-edit (the `ttt` baseline)
    decoding: str = "choices"  # how self-edits are sampled: "choices" (each value picked among the allowed) or "free" (self_edit.py)
    name: str = "arc"
    baseline: str = "default-ttt"
    extra_rewards: dict = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)  # tasks over the context budget, reported in stats

    def load_items(self, spec: str, n: int | None) -> list[ArcTask]:
        """The first n tasks that fit the context; those that do not are listed in `skipped` (and warned)."""
        tasks, self.skipped = within_budget(self.lm.tokenizer, select_tasks(spec, n), self.ttt.max_seq_len)
        if self.exclude is None:
            self.exclude = [s for s in [held_out_of(spec)] if s]
        for s in self.skipped:
            warnings.warn(f"ARC task {s.id} skipped: {s.reason}", stacklevel=2)
        return tasks

    def __post_init__(self):
        check_decoding(self.decoding)

    def validate(self, items: list[ArcTask], k: int) -> None:
        if k > 1 and not self.sampling.temperature:
            raise UsageError(f"k={k} self-edits sampled greedily would be identical; set a sampling temperature")
        check_no_overlap(items, self.exclude or [])

    def prompt(self, task: ArcTask) -> str:
        demos = "".join(pair_text(p) + "\n" for p in task.train)
        return render_prompt(self.lm, self_edit_instruction(demos))

    def sample(self, item: ArcTask, k: int, seed: int, generator: Sequence[Path] = ()) -> Samples:
        """k self-edits, each PREFILL + the model's continuation; the generator is fine-tuned on
        (prompt + PREFILL -> continuation). The answer is started with PREFILL, so the model continues a
        JSON object (the 135M model, asked for JSON without it, wrote prose or code in 12 of 12 samples).
        "free": one batch of bounded length, malformed ones kept as they are (they score 0);
        "choices": every value picked among the allowed ones by the current model's log-probabilities
        (top_p is not used), so every self-edit parses."""
        prompt = self.prompt(item)
        seed = derive_seed(seed, "arc-self-edit", item.id)
        temperature = self.sampling.temperature or 0.0
        if self.decoding == "choices":
            def score(items: list[tuple[str, list[str]]]) -> list[list[float]]:
                return self.lm.generator.loglikelihood(items, adapters=generator)

            texts = sample_by_choices(score, prompt, k, seed, temperature)
        else:
            texts = self.lm.generator.generate([prompt + PREFILL], adapters=generator, sampling=Sampling(
                max_new_tokens=self.sampling.max_new_tokens or 80, temperature=temperature,
                top_p=self.sampling.top_p, n=k, seed=seed, stop=("}",)))[0]
        return Samples([PREFILL + t for t in texts], [[(prompt + PREFILL, t)] for t in texts])

    def no_update(self, item: ArcTask, context: dict | None = None, generator: Sequence[Path] = ()) -> dict:
        """In-context only: the current model answers from the demonstrations, no training."""
        result = answer(self.lm, item, self.ttt, adapters=generator)
        return {"reward": float(result["solved"]), **result}

    def reward(self, item: ArcTask, self_edit: str | None, seed: int, context: dict | None = None,
               generator: Sequence[Path] = ()) -> dict:
        if self_edit is None:
            edit, parsed = self.default_edit, None
        else:
            parsed = parse_arc_self_edit(self_edit)
            if parsed.edit is None:
                return {"reward": 0.0, "usable": False, "malformed": parsed.reason, "self_edit": None}
            edit = parsed.edit
        result = self.configured(item, edit, seed, generator)
        return {"reward": float(result["solved"]), "usable": None if self_edit is None else True, "family": item.family, **result}

    def configured(self, item: ArcTask, edit: ArcSelfEdit, seed: int, generator: Sequence[Path] = ()) -> dict:
        """TTT under a given configuration (the oracle's grid), on the current model (golden base + `generator`)."""
        result = run_ttt(self.lm, item, edit, self.ttt, seed, on=generator)
        return {"self_edit": {**asdict(edit), "augmentations": list(edit.augmentations)}, **result}

    def iteration_stats(self, trials: list[dict]) -> dict:
        edits = [t for t in trials if t.get("usable") is not None]
        solved_by_family: dict[str, list[int]] = {}
        for t in edits:
            if t.get("family"):
                solved_by_family.setdefault(t["family"], []).append(int(t["reward"]))
        return {
            "malformed_self_edits": sum(not t["usable"] for t in edits),
            "malformed_reasons": sorted({t["malformed"] for t in edits if t.get("malformed")}),
            "solved_by_family": {f: f"{sum(v)}/{len(v)}" for f, v in sorted(solved_by_family.items())},
            "skipped_tasks": [asdict(s) for s in self.skipped],
        }

    def fine_tune(self, pairs: list[tuple[str, str]], seed: int, folder: Path, on_step: Callable | None = None,
                  generator: Sequence[Path] = ()) -> dict:
        examples = [TrainExample(c, prompt=p) for p, c in pairs]
        tr, _ = run_inner_loop(self.lm.model, self.lm.tokenizer, examples, self.sft, seed, evaluate=lambda: None,
                               keep=folder, on_step=on_step, on=generator)
        return {"losses": tr.losses, "train_seconds": tr.train_seconds}

    def describe(self) -> dict:
        return {"format": self.format, "base_sha256": self.lm.checksum}

    @property
    def format(self) -> str:
        """The self-edit format a ReST-EM run records: the JSON self-edit, and how it is decoded
        ("arc-self-edit" alone is free decoding, the only one before choices existed)."""
        return "arc-self-edit" if self.decoding == "free" else f"arc-self-edit/{self.decoding}"

    def worker_recipe(self) -> tuple[Callable, dict]:
        keep = ("ttt", "sampling", "sft", "exclude", "decoding")
        return build_arc_domain, {"model_path": str(self.lm.path), **{f.name: getattr(self, f.name) for f in fields(self) if f.name in keep}}


def build_arc_domain(model_path: str, **settings) -> ArcDomain:
    from seal.core.models import load_model

    return ArcDomain(lm=load_model(model_path), **settings)
