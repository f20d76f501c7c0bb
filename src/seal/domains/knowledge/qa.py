"""Closed-book question answering and its evaluation (the knowledge-incorporation domain).

The passage is never in the prompt: the model answers from its weights, with the article's
title as the topic, greedily, and only the first line of its answer counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from seal.core.config import AnswerConfig
from seal.domains.knowledge.data import Passage, check_text
from seal.core.generation import Sampling, render_prompt
from seal.domains.knowledge.grading import Grader, local_grade
from seal.core.models import LoadedModel
from seal.core.runtime import UsageError


def answer_prompt(lm: LoadedModel, question: str, topic: str | None) -> str:
    head = f"Topic: {topic}\n" if topic else ""
    return render_prompt(lm, f"{head}Question: {question}\nAnswer in a few words.")


def check_question_fits(lm: LoadedModel, question: str, topic: str | None, cfg: AnswerConfig | None = None) -> None:
    """Refuse a question that is not text (a lone surrogate), or whose prompt and answer do not fit
    the model's context (instead of a generation that runs for minutes and answers from a
    truncated prompt)."""
    check_text(question, "the question")
    if topic is not None:
        check_text(topic, "the topic")
    cfg = cfg or AnswerConfig()
    context = getattr(lm.model.config, "max_position_embeddings", None)
    if not context:
        return
    n = len(lm.tokenizer(answer_prompt(lm, question, topic), add_special_tokens=False)["input_ids"])
    if n + cfg.max_new_tokens > context:
        raise UsageError(f"the question is too long: {n} tokens with its prompt, and {cfg.max_new_tokens} more for the answer "
                         f"must fit this model's context of {context} tokens")


def short_answers(lm: LoadedModel, pairs: list[tuple[str, str]], batch_size: int = 8, adapters: Sequence[Path] = ()) -> list[str]:
    """Recite, then answer: for each (question, the model's own closed-book answer), the same model
    copies out the few words of its answer that answer the question. Answers here are whole
    recalled sentences, so exact match and F1 only mean something on this short form. The document
    is never shown: only what the model itself recalled."""
    prompts = [render_prompt(lm, f"Sentence: {recalled}\nQuestion: {question}\n"
                                 "Copy the few words of the sentence that answer the question.")
               for question, recalled in pairs]
    outs = lm.generator.generate(prompts, adapters=adapters, sampling=Sampling(max_new_tokens=16), batch_size=batch_size)
    return [first_line(o[0]) for o in outs]


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def answer_questions(
    lm: LoadedModel, questions: list[tuple[str, str | None]], cfg: AnswerConfig | None = None, on_batch=None,
    adapters: Sequence[Path] = (),
) -> list[str]:
    """Greedy short answers to (question, topic) pairs, batched, from the model with `adapters`."""
    cfg = cfg or AnswerConfig()
    prompts = [answer_prompt(lm, q, t) for q, t in questions]
    outs = lm.generator.generate(prompts, adapters=adapters, sampling=Sampling(max_new_tokens=cfg.max_new_tokens),
                                 batch_size=cfg.batch_size, on_batch=on_batch)
    return [first_line(o[0]) for o in outs]


@dataclass
class QuestionResult:
    passage_id: str
    question: str
    gold: str
    prediction: str
    correct: bool
    exact_match: bool
    f1: float


@dataclass
class EvalResult:
    per_question: list[QuestionResult] = field(default_factory=list)

    @property
    def n_questions(self) -> int:
        return len(self.per_question)

    def _mean(self, key: str) -> float:
        vals = [float(getattr(q, key)) for q in self.per_question]
        return sum(vals) / len(vals) if vals else 0.0

    @property
    def accuracy(self) -> float:
        return self._mean("correct")

    @property
    def exact_match(self) -> float:
        return self._mean("exact_match")

    @property
    def f1(self) -> float:
        return self._mean("f1")

    def by_passage(self) -> dict[str, float]:
        groups: dict[str, list[bool]] = {}
        for q in self.per_question:
            groups.setdefault(q.passage_id, []).append(q.correct)
        return {k: sum(v) / len(v) for k, v in groups.items()}

    def summary(self) -> dict:
        return {
            "n_questions": self.n_questions,
            "accuracy": round(self.accuracy, 4),
            "exact_match": round(self.exact_match, 4),
            "f1": round(self.f1, 4),
        }

    def to_json(self) -> dict:
        return {
            **self.summary(),
            "per_question": [
                {k: v for k, v in asdict(q).items()} for q in self.per_question
            ],
        }


def evaluate(
    lm: LoadedModel,
    passages: list[Passage],
    grader: Grader = local_grade,
    cfg: AnswerConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
    adapters: Sequence[Path] = (),
) -> EvalResult:
    """Closed-book accuracy on the passages' questions of the model with `adapters` (stored
    adapters, applied by the generator on top of the model as it stands)."""
    items = [(p, q) for p in passages for q in p.questions]
    preds = answer_questions(lm, [(q.question, p.title or None) for p, q in items], cfg, on_batch, adapters)
    result = EvalResult()
    for (p, q), pred in zip(items, preds):
        g = grader(q.question, q.answer, pred)
        result.per_question.append(
            QuestionResult(p.id, q.question, q.answer, pred, g.correct, g.exact_match, round(g.f1, 4))
        )
    return result


def evaluate_with_progress(lm: LoadedModel, passages: list[Passage], reporter, label: str,
                           adapters: Sequence[Path] = ()) -> EvalResult | None:
    """`evaluate` behind a progress bar of one step per question; None when there are no questions."""
    n = sum(len(p.questions) for p in passages)
    if not n:
        return None
    with reporter.task(label, n) as task:
        return evaluate(lm, passages, on_batch=task.advance, adapters=adapters)
