"""Model-free floors for closed-book QA: what a knowledge report's accuracy must beat.

A learned model often answers with a whole sentence of the article, and the local grader counts an
answer right when the gold answer is contained in it. So "0% before, 43% after" says little until
it stands beside the **random-sentence** floor: the expected score of answering each question with
a sentence of its own passage drawn uniformly at random, under the same grader. It is computed
exactly (every sentence graded, no sampling), without a model.
"""

from __future__ import annotations

from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.faithfulness import sentences
from seal.domains.knowledge.grading import Grader, local_grade
from seal.core.metrics import bootstrap_ci, mean


def random_sentence_floor(passages: list[Passage], grader: Grader = local_grade) -> dict | None:
    """Expected accuracy, exact match and F1 of a uniformly random sentence of the question's own
    passage as its answer; accuracy is macro over passages (as in the reports) with a bootstrap CI
    over passages. None when no passage has questions."""
    per_passage, per_question = [], []
    for p in passages:
        if not p.questions:
            continue
        units = sentences(p.context) or [p.context]
        rows = []
        for q in p.questions:
            grades = [grader(q.question, q.answer, s) for s in units]
            rows.append((mean([g.correct for g in grades]), mean([g.exact_match for g in grades]), mean([g.f1 for g in grades])))
        per_question += rows
        per_passage.append(mean([r[0] for r in rows]))
    if not per_passage:
        return None
    return {
        "accuracy": mean(per_passage),
        "accuracy_ci95": list(bootstrap_ci(per_passage)),
        "accuracy_micro": mean([r[0] for r in per_question]),
        "exact_match": mean([r[1] for r in per_question]),
        "f1": mean([r[2] for r in per_question]),
        "n_passages": len(per_passage),
        "n_questions": len(per_question),
    }
