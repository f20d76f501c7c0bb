"""The random-sentence floor of knowledge reports: exact expectations, computed without a model."""

import pytest

from seal.domains.knowledge.data import Passage, Question, load_dataset
from seal.bench.floors import random_sentence_floor
from seal.domains.knowledge.grading import local_grade

TOWER = Passage("tower", "Tower", "The tower opened in 2026. It cost 41 million euros. Engineers from Volthaven built it.", [
    Question("When did the tower open?", "2026"),  # in 1 of 3 sentences
    Question("Who built the tower?", "Volthaven"),  # in 1 of 3
    Question("What colour is the tower?", "blue"),  # in none
])
FERRY = Passage("ferry", "Ferry", "Ladefjord. It is a ferry.", [Question("What is the ferry called?", "Ladefjord")])  # 1 of 2, exactly


def test_floor_is_the_expected_score_of_a_random_sentence_of_the_passage():
    f = random_sentence_floor([TOWER, FERRY, Passage("empty", "No questions", "Nothing is asked here.")])
    assert f["n_passages"] == 2 and f["n_questions"] == 4  # a passage without questions does not count
    assert f["accuracy"] == pytest.approx(((1 / 3 + 1 / 3 + 0) / 3 + 1 / 2) / 2)  # macro over passages
    assert f["accuracy_micro"] == pytest.approx((1 / 3 + 1 / 3 + 0 + 1 / 2) / 4)
    assert f["exact_match"] == pytest.approx((1 / 2) / 4)  # only "Ladefjord." is the whole answer
    assert f["accuracy_ci95"][0] <= f["accuracy"] <= f["accuracy_ci95"][1]
    assert random_sentence_floor([Passage("empty", "No questions", "Nothing is asked.")]) is None


def test_floor_uses_the_grader_it_is_given():
    never = lambda q, gold, pred: local_grade(q, gold, "")  # noqa: E731 - a grader that finds nothing
    assert random_sentence_floor([TOWER, FERRY], grader=never)["accuracy"] == 0.0


def test_floor_of_the_bundled_data_matches_a_direct_count():
    from seal.domains.knowledge.faithfulness import sentences

    passages = load_dataset("fresh-facts:eval")
    per_question = [sum(local_grade(q.question, q.answer, s).correct for s in sentences(p.context)) / len(sentences(p.context))
                    for p in passages for q in p.questions]
    f = random_sentence_floor(passages)
    assert f["n_questions"] == len(per_question) == 120
    assert f["accuracy_micro"] == pytest.approx(sum(per_question) / len(per_question))
    assert 0.05 < f["accuracy"] < 0.25  # a floor well above 0: "0% before" is not the bar to beat
