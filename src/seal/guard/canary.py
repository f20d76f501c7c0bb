"""General-ability canary: does the model still know ordinary things after an update?

Multiple-choice items we wrote (commonsense, world knowledge, arithmetic, logic) are scored by
the log-likelihood of each choice given the question, no generation; plus perplexity on a
held-out general-English text we wrote. Both run on whatever weights are active (base, head,
or base + a trial's adapter).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from seal.core.models import LoadedModel
from seal.core.packing import choice_logprobs, token_ids


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


def reasoning_accuracy(lm: LoadedModel, items: list[CanaryItem] | None = None) -> dict:
    """Share of canary items whose correct choice has the highest log-likelihood, overall and per category."""
    items = items if items is not None else load_canary()
    scored = choice_logprobs(lm, scoring_items(items))
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


def perplexity(lm: LoadedModel, text: str | None = None, window: int = 512) -> float:
    """Token-level perplexity over non-overlapping windows of the held-out English text."""
    import torch

    text = text if text is not None else load_english()
    ids = token_ids(lm.tokenizer, text)
    nll, count = 0.0, 0
    for b in range(0, len(ids), window):
        chunk = torch.tensor([ids[b : b + window]], device=lm.model.device)
        if chunk.shape[1] < 2:
            continue
        with torch.no_grad():
            loss = lm.model(input_ids=chunk, labels=chunk).loss
        nll += float(loss) * (chunk.shape[1] - 1)
        count += chunk.shape[1] - 1
    return math.exp(nll / count)


def canary_scores(lm: LoadedModel) -> dict:
    r = reasoning_accuracy(lm)
    return {"reasoning_accuracy": round(r["accuracy"], 4), "margin": round(r["margin"], 4), "per_category": r["per_category"], "perplexity": round(perplexity(lm), 3)}
