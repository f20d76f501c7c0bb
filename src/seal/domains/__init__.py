"""Domains: what the outer loop (ReST-EM) needs to know about a kind of task.

A domain loads items, samples self-edits from the current generator, scores a self-edit by the
inner loop (the reward), and fine-tunes the generator on the self-edits the outer loop keeps. The
current generator is an adapter chain (oldest first; empty: the base model) that the outer loop
passes to each call as `generator=`: a domain holds no model state of its own. The
outer loop (`seal.rl.rest_em`) is written once against this contract and names no domain's types:
`seal.domains.knowledge` (passages and closed-book questions), `seal.domains.arc` (few-shot ARC:
self-edits that configure test-time training) and `seal.domains.toy` (no model: a contract test)
implement it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from seal.core.adapters import ADAPTER_CONFIG

# A trained generator's folder (written by the outer loop, read by whoever samples with it):
# its adapter, and a manifest naming the domain's format and the chain of links it builds on.
GENERATOR_MANIFEST = "generator.json"  # written next to a trained generator: {"format": ...}


@dataclass
class Samples:
    """k sampled self-edits of one item: their texts (what `reward` is given), and per self-edit
    the (prompt, completion) pairs the generator is fine-tuned on when that self-edit is kept (one
    pair for a one-prompt self-edit; several when a self-edit is written piecewise, e.g. a question
    per sentence). `context` is whatever else the domain needs when it scores this item's self-edits
    (e.g. the questions the model wrote itself): stored with the samples, passed back to `reward`
    as is, JSON only."""

    texts: list[str]
    sft_pairs: list[list[tuple[str, str]]]
    context: dict = field(default_factory=dict)


class Domain(Protocol):
    name: str
    baseline: str  # label of the trial without a self-edit (the knowledge domain: "passage")
    extra_rewards: dict[str, str]  # other reward keys of a trial record to report beside "reward" (name -> key)

    def load_items(self, spec: str, n: int | None) -> list[Any]:
        """Items (e.g. passages with questions) identified by `item.id`."""

    def validate(self, items: list[Any], k: int) -> None:
        """Refuse (SealError) items or settings this domain cannot train on, before any work."""

    def sample(self, item: Any, k: int, seed: int, generator: Sequence[Path] = ()) -> Samples:
        """k self-edits from the generator (golden base + the adapter chain `generator`), with what
        to fine-tune it on for each."""

    def no_update(self, item: Any, context: dict, generator: Sequence[Path] = ()) -> dict:
        """The current model's {"reward": float} on the item without any update."""

    def reward(self, item: Any, self_edit: str | None, seed: int, context: dict,
               generator: Sequence[Path] = ()) -> dict:
        """Run the inner loop on the self-edit (None: the domain's baseline without one), on top of
        the current model (golden base + `generator`), and return at least {"reward": float}; more
        keys are recorded."""

    def iteration_stats(self, trials: list[dict]) -> dict:
        """Domain-specific statistics of an iteration's trial records (may be empty)."""

    def fine_tune(self, pairs: list[tuple[str, str]], seed: int, folder: Path, on_step: Callable | None = None,
                  generator: Sequence[Path] = ()) -> dict:
        """Fine-tune the generator (golden base + `generator`) on (prompt, completion) pairs and write
        the new link of its chain into `folder`; returns {"losses": [...], "train_seconds": s}."""

    def describe(self) -> dict:
        """What a trained generator's manifest records about this domain (e.g. format, base model)."""

    def worker_recipe(self) -> tuple[Callable[..., Any], dict]:
        """(factory, keyword arguments): how a worker process builds an equal domain (the executor
        calls factory(**kwargs) there, e.g. loading the model from its path); picklable."""


def generator_format(path: Path, default: str) -> str:
    manifest = path / GENERATOR_MANIFEST
    return json.loads(manifest.read_text()).get("format", default) if manifest.is_file() else default


def generator_chain(path: Path) -> list[Path]:
    """Adapters that make up a trained generator, oldest first (ReST-EM iterations build on each other)."""
    manifest = path / GENERATOR_MANIFEST
    if manifest.is_file():
        chain = json.loads(manifest.read_text()).get("chain")
        if chain:
            return [path.parent / c for c in chain]
    return [path]


def is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()
