"""The ARC self-edit parser (valid, clamped, malformed, adversarial), pseudo-tasks and voting."""

from __future__ import annotations

import pytest

from seal.domains.arc.families import generate_task
from seal.domains.arc.grids import ArcTask, Pair
from seal.domains.arc.self_edit import (EPOCHS_MAX, GROUPS, LR_CHOICES, LR_MAX, LR_MIN, PREFILL, parse_arc_self_edit,
                                        sample_by_choices)
from seal.domains.arc.ttt import DEFAULT_EDIT, TTTConfig, answer_budget, pseudo_tasks, training_examples, training_sequences, vote


def test_valid_self_edit_with_chatter_around_it():
    p = parse_arc_self_edit('Sure! {"augmentations": ["chain", "basic", "basic"], "loss": "all", "lr": 0.001, "epochs": 3} Done.')
    assert p.reason is None
    assert p.edit.augmentations == ("basic", "chain") and p.edit.loss == "all"
    assert p.edit.lr == 0.001 and p.edit.epochs == 3 and p.edit.clamped == []


def test_out_of_range_numbers_are_clamped_and_recorded():
    p = parse_arc_self_edit('{"augmentations": [], "loss": "outputs", "lr": 5, "epochs": 100}')
    assert (p.edit.lr, p.edit.epochs, p.edit.clamped) == (LR_MAX, EPOCHS_MAX, ["lr", "epochs"])
    p = parse_arc_self_edit('{"augmentations": [], "loss": "outputs", "lr": 1e-9, "epochs": 0}')
    assert (p.edit.lr, p.edit.epochs) == (LR_MIN, 1)
    assert parse_arc_self_edit('{"augmentations": [], "loss": "outputs", "lr": 1, "epochs": 2.0}').edit.epochs == 2


@pytest.mark.parametrize("text, reason", [
    ("", "no JSON object"),
    ("augmentations: basic", "no JSON object"),
    ('{"augmentations": ["basic"], "loss": "outputs", "lr": 0.001', "no JSON object"),  # unterminated
    ("[1, 2, 3]", "no JSON object"),
    ('{"augmentations": ["basic"], "loss": "outputs", "lr": 0.001}', "missing key"),
    ('{"augmentations": "basic", "loss": "outputs", "lr": 0.001, "epochs": 2}', "list of group names"),
    ('{"augmentations": [1], "loss": "outputs", "lr": 0.001, "epochs": 2}', "list of group names"),
    ('{"augmentations": ["rotate"], "loss": "outputs", "lr": 0.001, "epochs": 2}', "unknown augmentation"),
    ('{"augmentations": [], "loss": "inputs", "lr": 0.001, "epochs": 2}', "loss must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": NaN, "epochs": 2}', "lr must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": Infinity, "epochs": 2}', "lr must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": 1e999, "epochs": 2}', "lr must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": -0.1, "epochs": 2}', "lr must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": "0.001", "epochs": 2}', "lr must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": true, "epochs": 2}', "lr must be"),
    ('{"augmentations": [], "loss": "outputs", "lr": 0.001, "epochs": 1.5}', "whole number"),
    ('{"augmentations": [], "loss": "outputs", "lr": 0.001, "epochs": false}', "whole number"),
    ('{"augmentations": [], "loss": ["outputs"], "lr": 0.001, "epochs": 2}', "loss must be"),
    ("{" * 100000, "no JSON object"),  # deep nesting is cut at MAX_TEXT, never a RecursionError
    ('{"a": ' * 3000 + "1" + "}" * 3000, "nested too deeply|missing key|no JSON object"),
])
def test_malformed_self_edits_have_a_reason(text, reason):
    import re

    p = parse_arc_self_edit(text)
    assert p.edit is None and re.search(reason, p.reason)


class ScriptedScorer:
    """Log-probabilities from a preference table (option text -> score; `rest` for the others), with
    the calls recorded."""

    def __init__(self, prefer: dict[str, float] | None = None, rest: float = -5.0):
        self.prefer, self.rest, self.calls = prefer or {}, rest, []

    def __call__(self, items):
        self.calls.append(items)
        return [[self.prefer.get(o, self.rest) for o in options] for _, options in items]


def test_choices_decoding_takes_the_most_likely_option_greedily_and_always_parses():
    score = ScriptedScorer({'"chain"': -0.1, ', "basic"': -0.2, "]": -1.0, 'all",': -0.3, "0.002,": -0.1, "3}": -0.1})
    texts = sample_by_choices(score, "PROMPT", 2, seed=0, temperature=0.0)
    assert texts == ['"chain", "basic"], "loss": "all", "lr": 0.002, "epochs": 3}'] * 2
    edit = parse_arc_self_edit(PREFILL + texts[0]).edit
    assert edit.augmentations == ("basic", "chain") and (edit.loss, edit.lr, edit.epochs) == ("all", 0.002, 3)
    # one scoring call per step: 2 groups, the bracket, loss, lr, epochs; the two drafts agree, so scored once
    assert len(score.calls) == 6 and all(len(items) == 1 for items in score.calls)
    assert all(ctx.startswith("PROMPT" + PREFILL) for items in score.calls for ctx, _ in items)
    assert score.calls[1][0] == ("PROMPT" + PREFILL + '"chain"', [', "basic"', ', "size"', ', "repeat"', "]"])


def test_choices_decoding_samples_by_temperature_within_a_bounded_number_of_steps():
    flat = ScriptedScorer()  # every option equally likely
    texts = sample_by_choices(flat, "P", 40, seed=3, temperature=1.0)
    edits = [parse_arc_self_edit(PREFILL + t).edit for t in texts]
    assert all(e is not None and not e.clamped for e in edits)  # every draft parses, in range
    assert len(flat.calls) <= len(GROUPS) + 4 and len({t for t in texts}) > 20
    assert len(flat.calls[0]) == 1 and 1 < len(flat.calls[1]) <= len(GROUPS) + 1  # distinct drafts only
    assert {f"{e.lr:g}" for e in edits} == {f"{float(v):g}" for v in LR_CHOICES}
    assert sample_by_choices(ScriptedScorer(), "P", 40, seed=3, temperature=1.0) == texts  # seeded
    assert sample_by_choices(ScriptedScorer(), "P", 40, seed=4, temperature=1.0) != texts
    # a strong preference wins at temperature 1 and is flattened at a high temperature
    sharp = {"]": 0.0, 'outputs",': 0.0, "0.0005,": 0.0, "2}": 0.0}
    assert set(sample_by_choices(ScriptedScorer(sharp, rest=-30.0), "P", 20, 0, 1.0)) == {'], "loss": "outputs", "lr": 0.0005, "epochs": 2}'}
    assert len(set(sample_by_choices(ScriptedScorer(sharp, rest=-30.0), "P", 20, 0, 1000.0))) > 10


def test_vote_majority_ties_to_the_first_seen_and_two_attempts():
    a, b, c = ((1,),), ((2,),), ((3,),)
    assert vote([a, b, b, None, c], 2) == [b, a]
    assert vote([c, a, a, c], 2) == [c, a]
    assert vote([None, None], 2) == []
    assert vote([a, b, c], 1) == [a]


def test_pseudo_tasks_leave_one_and_two_out():
    demos = [Pair(((i,),), ((i + 1,),)) for i in range(4)]
    tasks = pseudo_tasks(demos)
    assert len(tasks) == 4 + 4 * 3
    for held, (rest, query) in enumerate(tasks[:4]):
        assert query == demos[held] and len(rest) == 3 and query not in rest
    assert all(len(rest) == 2 and query not in rest for rest, query in tasks[4:])
    assert len(pseudo_tasks(demos[:3])) == 3 and pseudo_tasks(demos[:1]) == []


def test_training_sequences_follow_the_self_edit_and_the_cap():
    task = generate_task("flip", 3, "t", n_demos=4)
    cfg = TTTConfig(max_sequences=10)
    seqs = training_sequences(task, DEFAULT_EDIT, cfg, seed=1)
    assert len(seqs) == 10 and [s for s, _, _ in seqs[:4]] == ["identity"] * 4
    assert seqs == training_sequences(task, DEFAULT_EDIT, cfg, seed=1)
    assert seqs != training_sequences(task, DEFAULT_EDIT, cfg, seed=2)
    none = training_sequences(task, parse_arc_self_edit('{"augmentations": [], "loss": "outputs", "lr": 1, "epochs": 1}').edit,
                              TTTConfig(max_sequences=1000), seed=1)
    assert {s for s, _, _ in none} == {"identity"} and len(none) == 16
    big = training_sequences(task, DEFAULT_EDIT, TTTConfig(max_sequences=1000), seed=1)
    assert {s.split("+")[0] for s, _, _ in big} >= {"identity", "rot90", "flip_v", "transpose"}
    assert any("+colours:" in s for s, _, _ in big)
    sized = parse_arc_self_edit('{"augmentations": ["size", "repeat"], "loss": "outputs", "lr": 1, "epochs": 1}').edit
    small = ArcTask("s", [Pair(((i, 0), (0, 1)), ((0, i), (1, 0))) for i in range(1, 5)], [Pair(((5, 0), (0, 1)), ((0, 5), (1, 0)))])
    specs = {s for s, _, _ in training_sequences(small, sized, TTTConfig(max_sequences=1000), seed=1)}
    assert specs == {"identity", "repeat", "scale:2"}
    specs = {s for s, _, _ in training_sequences(small, sized, TTTConfig(max_sequences=1000, size_max_side=3), seed=1)}
    assert specs == {"identity", "repeat"}  # scaled grids would exceed the side limit
    assert answer_budget(small) == 2 * 3 + 4
    outs = training_examples(training_sequences(small, DEFAULT_EDIT, TTTConfig(max_sequences=2), seed=0), "outputs")
    alls = training_examples(training_sequences(small, DEFAULT_EDIT, TTTConfig(max_sequences=2), seed=0), "all")
    assert outs[0].prompt.endswith("output:\n") and outs[0].completion.count("\n") == 2
    assert alls[0].prompt == "" and alls[0].completion == outs[0].prompt + outs[0].completion
