"""General-ability canary: does the model still know ordinary things after an update?

Multiple-choice items we wrote (commonsense, world knowledge, arithmetic, logic) are scored by
the log-likelihood of each choice given the question, no generation; plus perplexity on a
held-out general-English text we wrote. Both are asked of the model backend (seal.core.generation)
with the adapters named (none: the model as it stands, e.g. base + a trial's live adapter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from seal.core.models import LoadedModel


@dataclass
class CanaryItem:
    id: str
    category: str
    question: str
    choices: list[str]
    answer: int


def _resource(name: str) -> Path:
    return Path(str(resources.files("seal") / "resources" / "canary" / name))


def load_canary() -> list[CanaryItem]:
    return [CanaryItem(**json.loads(line)) for line in _resource("canary.jsonl").read_text().splitlines() if line.strip()]


def load_english() -> str:
    return _resource("english.txt").read_text()


def scoring_items(items: list[CanaryItem]) -> list[tuple[str, list[str]]]:
    """The (context, choices) each canary item is scored as."""
    return [(f"Question: {it.question}\nAnswer:", [f" {ch}" for ch in it.choices]) for it in items]


def reasoning_accuracy(lm: LoadedModel, items: list[CanaryItem] | None = None, adapters: Sequence[Path] = ()) -> dict:
    """Share of canary items whose correct choice has the highest log-likelihood, overall and per category."""
    items = items if items is not None else load_canary()
    scored = lm.generator.loglikelihood(scoring_items(items), adapters=adapters)
    per_cat: dict[str, list[bool]] = {}
    margins: list[float] = []
    for it, s in zip(items, scored):
        per_cat.setdefault(it.category, []).append(max(range(len(s)), key=s.__getitem__) == it.answer)
        margins.append(s[it.answer] - max(x for j, x in enumerate(s) if j != it.answer))
    correct = [c for v in per_cat.values() for c in v]
    return {
        "accuracy": sum(correct) / len(correct),
        # continuous: mean log-prob of the right choice minus the best wrong one; moves before accuracy does
        "margin": sum(margins) / len(margins),
        "n_items": len(correct),
        "per_category": {k: sum(v) / len(v) for k, v in sorted(per_cat.items())},
    }


def perplexity(lm: LoadedModel, text: str | None = None, window: int = 512, adapters: Sequence[Path] = ()) -> float:
    """Token-level perplexity over non-overlapping windows of the held-out English text."""
    return lm.generator.perplexity(text if text is not None else load_english(), adapters=adapters, window=window)


def canary_scores(lm: LoadedModel, adapters: Sequence[Path] = ()) -> dict:
    """The canary and held-out perplexity of the model with `adapters`."""
    r = reasoning_accuracy(lm, adapters=adapters)
    return {"reasoning_accuracy": round(r["accuracy"], 4), "margin": round(r["margin"], 4),
            "per_category": r["per_category"], "perplexity": round(perplexity(lm, adapters=adapters), 3)}
