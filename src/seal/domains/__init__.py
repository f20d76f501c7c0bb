"""Domains: what the outer loop (ReST-EM) needs to know about a kind of task.

A domain loads items, builds the prompt the generator sees, parses a self-edit, and scores a
self-edit by the inner loop (the reward). The outer loop is written once against this contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Samples:
    """k sampled self-edits of one item: their texts (what `reward` is given), and per self-edit
    the (prompt, completion) pairs the generator is fine-tuned on when that self-edit is kept (one
    pair for a one-prompt self-edit; several when a self-edit is written piecewise, e.g. a question
    per sentence)."""

    texts: list[str]
    sft_pairs: list[list[tuple[str, str]]]


class Domain(Protocol):
    name: str

    def load_items(self, spec: str, n: int | None) -> list[Any]:
        """Items (e.g. passages with questions) identified by `item.id`."""

    def sample(self, item: Any, k: int, seed: int) -> Samples:
        """k self-edits from the current generator, with what to fine-tune it on for each."""

    def no_update(self, item: Any) -> dict:
        """The current model's {"reward": float} on the item without any update."""

    def reward(self, item: Any, self_edit: str | None, seed: int) -> dict:
        """Run the inner loop on the self-edit (None: the domain's baseline without one) and
        return at least {"reward": float}; more keys are recorded."""
