"""Domains: what the outer loop (ReST-EM) needs to know about a kind of task.

A domain loads items, builds the prompt the generator sees, parses a self-edit, and scores a
self-edit by the inner loop (the reward). The outer loop is written once against this contract.
"""

from __future__ import annotations

from typing import Any, Protocol


class Domain(Protocol):
    name: str

    def load_items(self, spec: str, n: int | None) -> list[Any]:
        """Items (e.g. passages with questions) identified by `item.id`."""

    def prompt(self, item: Any) -> str:
        """The self-edit prompt for an item, rendered for the generator."""

    def sample(self, item: Any, k: int, seed: int) -> list[str]:
        """k self-edit completions from the current generator."""

    def reward(self, item: Any, self_edit: str | None, seed: int) -> dict:
        """Run the inner loop on the self-edit (None: the domain's baseline without one) and
        return at least {"reward": float}; more keys are recorded."""
