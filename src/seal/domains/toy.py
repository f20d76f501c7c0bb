"""A domain without a model: the smallest thing the outer loop can teach, used to test ReST-EM
itself (locally and on Ray) in milliseconds, and to show what a new domain has to provide.

Each item hides a target number in 0..vocab-1. The generator is a table of pseudo-counts per
prompt (uniform at first); a self-edit is one number drawn from it; the reward is how close the
number is to the target (1 - distance / (vocab - 1)); the trial without a self-edit scores 0.5.
Fine-tuning adds `boost` pseudo-counts for each kept (prompt, number) pair and writes them as the
new link of the generator chain (`adapter_toy.json`, so executors ship it like an adapter). So
ReST-EM must move the generator towards each item's target: the mean reward of a later iteration
is higher than the first one's.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from seal.core.runtime import UsageError, derive_seed
from seal.domains import Samples

TABLE = "adapter_toy.json"


@dataclass
class ToyItem:
    id: str
    target: int


@dataclass
class ToyDomain:
    vocab: int = 10  # self-edits are the numbers 0..vocab-1
    boost: float = 20.0  # pseudo-counts added per kept pair: the fine-tuning's learning rate
    name: str = "toy"
    baseline: str = "none"
    extra_rewards: dict = field(default_factory=dict)

    def load_items(self, spec: str, n: int | None) -> list[ToyItem]:
        """`spec` seeds the targets (e.g. "toy:0"); n items (default 4)."""
        return [ToyItem(f"toy-{i}", derive_seed(spec, i) % self.vocab) for i in range(n or 4)]

    def validate(self, items: list[ToyItem], k: int) -> None:
        if k < 1 or self.vocab < 2:
            raise UsageError("the toy domain needs k >= 1 and vocab >= 2")

    def _prompt(self, item: ToyItem) -> str:
        return f"pick a number for {item.id}"

    def _weights(self, prompt: str, generator: Sequence[Path]) -> list[float]:
        weights = [1.0] * self.vocab
        for link in generator:
            for number, count in json.loads((link / TABLE).read_text()).get(prompt, {}).items():
                weights[int(number)] += count
        return weights

    def sample(self, item: ToyItem, k: int, seed: int, generator: Sequence[Path] = ()) -> Samples:
        prompt = self._prompt(item)
        drawn = random.Random(seed).choices(range(self.vocab), weights=self._weights(prompt, generator), k=k)
        return Samples([str(d) for d in drawn], [[(prompt, str(d))] for d in drawn],
                       {"generator_links": len(generator)})

    def no_update(self, item: ToyItem, context: dict, generator: Sequence[Path] = ()) -> dict:
        return {"reward": 0.0}

    def reward(self, item: ToyItem, self_edit: str | None, seed: int, context: dict,
               generator: Sequence[Path] = ()) -> dict:
        if self_edit is None:
            return {"reward": 0.5, "usable": None}
        try:
            number = int(self_edit)
        except ValueError:
            return {"reward": 0.0, "usable": False}
        return {"reward": 1 - abs(number - item.target) / (self.vocab - 1), "usable": True}

    def iteration_stats(self, trials: list[dict]) -> dict:
        return {}

    def fine_tune(self, pairs: list[tuple[str, str]], seed: int, folder: Path, on_step: Callable | None = None,
                  generator: Sequence[Path] = ()) -> dict:
        t0, table, losses = time.perf_counter(), {}, []
        for step, (prompt, completion) in enumerate(pairs, 1):
            weights = self._weights(prompt, generator)
            losses.append(-math.log(weights[int(completion)] / sum(weights)))  # NLL before this link
            table.setdefault(prompt, {})
            table[prompt][completion] = table[prompt].get(completion, 0.0) + self.boost
            if on_step:
                on_step(step, len(pairs), losses[-1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TABLE).write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        return {"losses": losses, "train_seconds": time.perf_counter() - t0}

    def describe(self) -> dict:
        return {"format": "toy", "vocab": self.vocab}

    def worker_recipe(self) -> tuple[Callable, dict]:
        return ToyDomain, {"vocab": self.vocab, "boost": self.boost}
