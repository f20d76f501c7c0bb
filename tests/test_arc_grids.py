"""ARC grids, augmenters, generated families and task loading: pure unit tests (no model)."""

from __future__ import annotations

import json
import random

import pytest

from seal.domains.arc.augment import GEOMETRIC, augment_pairs, check, colour_permutation, forward, inverse
from seal.domains.arc.families import FAMILIES, generate_task, generated_split
from seal.domains.arc.grids import Pair, as_grid, grid_text, parse_grid, task_prompt
from seal.domains.arc.tasks import check_no_overlap, held_out_of, load_tasks, select_tasks, within_budget
from seal.core.runtime import UsageError


def random_grid(rng: random.Random, lo: int = 1, hi: int = 10):
    h, w = rng.randint(lo, hi), rng.randint(lo, hi)
    return tuple(tuple(rng.randint(0, 9) for _ in range(w)) for _ in range(h))


def all_specs(rng):
    chains = [f"{g}+{colour_permutation(rng)}" for g in GEOMETRIC] + [f"scale:3+{g}+{colour_permutation(rng, False)}" for g in GEOMETRIC]
    return [*GEOMETRIC, colour_permutation(rng), colour_permutation(rng, keep_background=False), "scale:2", "scale:5", "repeat", *chains]


def test_every_augmenter_inverts_on_random_grids():
    rng = random.Random(0)
    for spec in all_specs(rng):
        for _ in range(30):
            g = random_grid(rng)
            assert inverse(spec, forward(spec, g)) == g, spec


def test_geometric_augmenters_do_what_they_say():
    g = ((1, 2, 3), (4, 5, 6))
    assert forward("rot90", g) == ((4, 1), (5, 2), (6, 3))
    assert forward("rot270", g) == ((3, 6), (2, 5), (1, 4))
    assert forward("flip_h", g) == ((3, 2, 1), (6, 5, 4))
    assert forward("flip_v", g) == ((4, 5, 6), (1, 2, 3))
    assert forward("transpose", g) == ((1, 4), (2, 5), (3, 6))
    assert forward("anti_transpose", g) == ((6, 3), (5, 2), (4, 1))
    assert forward("scale:2", ((1, 2),)) == ((1, 1, 2, 2), (1, 1, 2, 2))
    assert forward("colours:0987654321", ((0, 1, 9),)) == ((0, 9, 1),)
    assert len({forward(s, g) for s in GEOMETRIC}) == 8  # the 8 symmetries are distinct


def test_inverse_refuses_what_forward_cannot_have_made():
    with pytest.raises(ValueError):
        inverse("scale:2", ((1, 2), (1, 1)))  # not uniform 2x2 blocks
    with pytest.raises(ValueError):
        inverse("scale:2", ((1, 1, 1),))  # not divisible
    for bad in ("rot45", "colours:0123", "colours:0123456788", "scale:9", "scale:x", "flip_h:1", ""):
        with pytest.raises(ValueError):
            check(bad)


def test_grid_text_round_trip_and_answer_parsing():
    rng = random.Random(1)
    for _ in range(50):
        g = random_grid(rng)
        assert parse_grid(grid_text(g)) == g
    assert parse_grid("012\n340\n\ninput:\n999") == ((0, 1, 2), (3, 4, 0))
    assert parse_grid(" 12\n34 \nthe answer") == ((1, 2), (3, 4))
    for bad in ("", "hello", "12\n345", "\u0661\u0662"):  # empty, chatter, ragged, non-ASCII digits
        with pytest.raises(ValueError):
            parse_grid(bad)
    for bad in ([], [[]], [[1, 10]], [[1, True]], [[1], [1, 2]], [[0] * 31]):
        with pytest.raises(ValueError):
            as_grid(bad)


def test_task_prompt_format():
    p = Pair(((1, 2),), ((2, 1),))
    assert task_prompt([p], ((3, 4),)) == "input:\n12\noutput:\n21\n\ninput:\n34\noutput:\n"


EXPECTED_RULES = {
    "transpose": lambda g, t: forward("transpose", g),
    "scale": lambda g, t: forward("scale:2", g),
    "gravity": lambda g, t: tuple(zip(*[tuple(sorted(col, key=lambda v: v != 0)) for col in zip(*g)])),
}


def test_generated_families_are_deterministic_sized_and_follow_their_rule():
    assert len(FAMILIES) >= 8
    for name in FAMILIES:
        a, b = generate_task(name, 7, "x"), generate_task(name, 7, "x")
        assert a == b
        assert generate_task(name, 8, "x") != a
        assert 3 <= len(a.train) <= 5 and len(a.test) == 1
        for p in a.train + a.test:
            for g in (p.input, p.output):
                assert 1 <= len(g) <= 10 and 1 <= len(g[0]) <= 10
            assert p.input != p.output
        assert max(len(a.train[0].input), len(a.train[0].input[0])) >= 2
        if name in EXPECTED_RULES:
            for p in a.train + a.test:
                assert p.output == EXPECTED_RULES[name](p.input, a)
    inputs = [p.input for p in generate_task("count-to-bar", 3, "c").train]
    outputs = [p.output for p in generate_task("count-to-bar", 3, "c").train]
    assert [len(o[0]) for o in outputs] == [sum(v > 0 for r in g for v in r) for g in inputs]


def test_generated_splits_are_fixed_and_disjoint():
    train, ev = generated_split("train"), generated_split("eval")
    assert len(train) == len(ev) == 40
    assert [t.id for t in select_tasks("generated:eval", 3)] == [t.id for t in ev[:3]]
    assert {t.family for t in train} == set(FAMILIES)
    assert not {t.fingerprint for t in train} & {t.fingerprint for t in ev}
    check_no_overlap(train, ["generated:eval"])
    with pytest.raises(UsageError, match="also appear"):
        check_no_overlap(ev[:2], ["generated:eval"])
    assert held_out_of("generated:train") == "generated:eval"


def test_load_a_challenges_file_with_sibling_solutions(tmp_path):
    chal = {"t1": {"train": [{"input": [[1, 0]], "output": [[0, 1]]}], "test": [{"input": [[2, 0]]}]}}
    (tmp_path / "x_challenges.json").write_text(json.dumps(chal))
    (tmp_path / "x_solutions.json").write_text(json.dumps({"t1": [[[0, 2]]]}))
    [t] = load_tasks(str(tmp_path / "x_challenges.json"))
    assert t.id == "t1" and t.test[0].output == ((0, 2),)
    (tmp_path / "x_solutions.json").unlink()
    with pytest.raises(UsageError, match="task t1: .*no output"):
        load_tasks(str(tmp_path / "x_challenges.json"))
    chal["t1"]["train"][0]["output"] = [[0, 12]]
    (tmp_path / "y.json").write_text(json.dumps(chal))
    with pytest.raises(UsageError, match="task t1"):
        load_tasks(str(tmp_path / "y.json"))
    with pytest.raises(UsageError, match="unknown ARC data"):
        load_tasks("arc-3:train")


def test_paper_1b_sets_when_the_shared_data_is_there():
    from seal.domains.arc.tasks import arc_data_dir

    if not (arc_data_dir() / "arc-agi_training_challenges_filtered_1B_training_set.json").is_file():
        pytest.skip("SEAL's few-shot data is not beside the project")
    assert len(load_tasks("arc-1b:train")) == 12
    ev = load_tasks("arc-1b:eval")
    assert len(ev) == 10 and ev[0].id == "358ba94e" and all(t.test[0].output for t in ev)


class CharTokenizer:
    """One token per character: enough to test the budget arithmetic."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


def test_tasks_over_the_budget_are_reported_not_dropped():
    tasks = generated_split("eval", 6)
    lengths = [len(task_prompt(t.train, t.test[0].input)) + len(grid_text(t.test[0].output)) + 1 for t in tasks]
    budget = sorted(lengths)[2]
    kept, skipped = within_budget(CharTokenizer(), tasks, budget)
    assert len(kept) + len(skipped) == len(tasks) and skipped
    assert {s.id for s in skipped} == {t.id for t, n in zip(tasks, lengths) if n > budget}
    assert all("budget" in s.reason for s in skipped)


def test_augmenting_a_task_keeps_it_consistent():
    t = generate_task("flip", 1, "f")
    aug = augment_pairs("transpose+colours:0213456789", t.train)
    assert [inverse("transpose+colours:0213456789", p.output) for p in aug] == [p.output for p in t.train]
