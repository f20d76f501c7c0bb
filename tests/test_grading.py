import pytest

from seal.domains.knowledge.grading import contains, exact_match, local_grade, normalize, token_f1


def test_normalize_like_squad():
    assert normalize("The  Volthaven, Inc.!") == "volthaven inc"


@pytest.mark.parametrize(
    "gold,pred,em,cont",
    [
        ("Volthaven", "volthaven.", True, True),
        ("Volthaven", "It was Volthaven, a Porto firm", False, True),
        ("48", "148 times", False, False),  # whole tokens only
        ("6.2 million euros", "about 6.2 million euros", False, True),
        ("Ilda Ferraz", "Ilda", False, False),
    ],
)
def test_exact_and_containment(gold, pred, em, cont):
    assert exact_match(gold, pred) is em
    assert contains(gold, pred) is cont
    assert local_grade("q", gold, pred).correct is (em or cont)


def test_token_f1():
    assert token_f1("Ilda Ferraz", "Ilda Ferraz") == 1.0
    assert token_f1("Ilda Ferraz", "Ilda") == pytest.approx(2 / 3)
    assert token_f1("Ilda Ferraz", "nobody") == 0.0
    assert token_f1("the", "") == 1.0  # both empty after normalisation
