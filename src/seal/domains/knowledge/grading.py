"""Local answer grading: SQuAD-normalised exact match, gold-in-answer containment, token F1.

A `Grader` is any callable (question, gold, prediction) -> Grade; an LLM judge can be another.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(gold: str, prediction: str) -> bool:
    return normalize(gold) == normalize(prediction)


def contains(gold: str, prediction: str) -> bool:
    """Gold answer occurs in the prediction as whole tokens (lenient to extra words)."""
    g, p = normalize(gold), normalize(prediction)
    return bool(g) and f" {g} " in f" {p} "


def token_f1(gold: str, prediction: str) -> float:
    g, p = normalize(gold).split(), normalize(prediction).split()
    common = Counter(g) & Counter(p)
    same = sum(common.values())
    if not g or not p:
        return float(g == p)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


@dataclass
class Grade:
    correct: bool  # containment or exact match
    exact_match: bool
    f1: float


class Grader(Protocol):
    def __call__(self, question: str, gold: str, prediction: str) -> Grade: ...


def local_grade(question: str, gold: str, prediction: str) -> Grade:
    em = exact_match(gold, prediction)
    return Grade(correct=em or contains(gold, prediction), exact_match=em, f1=token_f1(gold, prediction))
