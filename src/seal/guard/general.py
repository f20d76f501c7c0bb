"""General-knowledge probe: does the model still answer ordinary questions after learning?

A bundled set of short closed-book questions we wrote (capitals, basic science, arithmetic,
famous people, everyday words) is asked with generation, greedy, with NO topic, and graded by
the local grader against a few accepted answers. Log-likelihood canaries miss the failure this
catches: a head that answers every question with a sentence of the document it learned
("What is the capital of France?" -> "It is 214 million kroner.").

`kept` is the share of the questions the golden copy (base model, no adapters) answers correctly
that the model with the given adapters still answers correctly; `copies` counts answers that
repeat a run of words of a learned document that the golden copy's answer does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from seal.core.config import AnswerConfig
from seal.domains.knowledge.grading import local_grade, normalize
from seal.domains.knowledge.qa import answer_questions
from seal.core.models import LoadedModel

COPY_NGRAM = 5  # words in a row shared with a learned document that make an answer a copy


@dataclass
class GeneralQuestion:
    id: str
    category: str
    question: str
    answers: list[str]  # any of them counts as correct


def load_general(path: Path | None = None) -> list[GeneralQuestion]:
    path = path or Path(str(resources.files("seal") / "resources" / "general" / "questions.jsonl"))
    return [GeneralQuestion(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_correct(q: GeneralQuestion, prediction: str) -> bool:
    return any(local_grade(q.question, gold, prediction).correct for gold in q.answers)


def ask_general(lm: LoadedModel, questions: list[GeneralQuestion] | None = None, max_new_tokens: int = 24,
                adapters: Sequence[Path] = (), batch_size: int = 16) -> list[dict]:
    """Answers of the model with `adapters` (none: the golden copy), closed-book, no topic."""
    questions = questions if questions is not None else load_general()
    preds = answer_questions(lm, [(q.question, None) for q in questions], AnswerConfig(max_new_tokens=max_new_tokens, batch_size=batch_size),
                             adapters=adapters)
    return [{"id": q.id, "prediction": p, "correct": is_correct(q, p)} for q, p in zip(questions, preds)]


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies_document(answer: str, documents: list[str], question: str = "", n: int = COPY_NGRAM) -> bool:
    """The answer repeats n words in a row of a learned document (not ones the question itself has)."""
    grams = _ngrams(answer, n) - _ngrams(question, n)
    return any(grams & _ngrams(doc, n) for doc in documents)


def general_summary(answers: list[dict], base_answers: list[dict], documents: list[str] = (),
                    questions: list[GeneralQuestion] | None = None) -> dict:
    """kept: of the questions the golden copy answers correctly, the share still answered correctly
    (lost: the others, id -> the answer given now, to see what forgetting looks like);
    copies: answers that repeat a learned document where the golden copy's answer did not."""
    questions = questions if questions is not None else load_general()
    text = {q.id: q.question for q in questions}
    base = {a["id"]: a for a in base_answers}
    known = [a for a in answers if base.get(a["id"], {}).get("correct")]
    copied = [
        a["id"] for a in answers
        if copies_document(a["prediction"], list(documents), text.get(a["id"], ""))
        and not copies_document(base.get(a["id"], {}).get("prediction", ""), list(documents), text.get(a["id"], ""))
    ]
    return {
        "accuracy": round(sum(a["correct"] for a in answers) / len(answers), 4) if answers else 0.0,
        "n_questions": len(answers),
        "n_base_correct": len(known),
        "kept": round(sum(a["correct"] for a in known) / len(known), 4) if known else None,
        "copies": len(copied),
        "copied_ids": copied,
        "lost": {a["id"]: a["prediction"] for a in known if not a["correct"]},
    }
