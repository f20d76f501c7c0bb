"""ARC test-time training and the ARC domain on the tiny random model (fast tier)."""

from __future__ import annotations

import json

import pytest

from seal.domains.arc import ArcDomain
from seal.domains.arc.families import generate_task
from seal.domains.arc.grids import ArcTask, Pair
from seal.domains.arc.self_edit import parse_arc_self_edit
from seal.domains.arc.ttt import TTTConfig, run_ttt
from seal.domains import GENERATOR_MANIFEST

SMALL = TTTConfig(lora_r=8, lora_alpha=16, max_sequences=8, views=3)
EDIT = '{"augmentations": ["basic"], "loss": "outputs", "lr": 0.001, "epochs": 1}'


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_ttt_on_a_generated_task_end_to_end_leaves_the_base_untouched(tiny_lm):
    import torch

    task = generate_task("flip", 5, "flip-5", n_demos=4)
    before = snapshot(tiny_lm.model)
    rec = run_ttt(tiny_lm, task, parse_arc_self_edit(EDIT).edit, SMALL, seed=3)
    assert rec["n_sequences"] == 8 and "identity" in rec["augmenters"]
    assert len(rec["views"]) == 3 and [v["view"] for v in rec["views"]] == ["identity", "transpose", "flip_h"]
    assert len(rec["attempts"]) <= 2 and rec["solved"] in (True, False)
    after = tiny_lm.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    again = run_ttt(tiny_lm, task, parse_arc_self_edit(EDIT).edit, SMALL, seed=3)
    assert (again["loss_first"], again["loss_last"], again["views"]) == (rec["loss_first"], rec["loss_last"], rec["views"])


def test_ttt_raises_the_probability_of_the_right_answer(tiny_lm):
    """Every output is the 1x1 grid 7: the 2-layer model learns it at test time (its tied, frozen
    output layer keeps it from becoming confident enough to be reliably solved, so the graded signal
    is checked: the right answer's log-probability, before and after)."""
    from seal.domains.arc.ttt import answer

    demos = [Pair(((i, j), (j, i)), ((7,),)) for i, j in ((1, 2), (3, 4), (5, 6), (8, 9))]
    task = ArcTask("seven", demos, [Pair(((2, 3), (3, 2)), ((7,),))])
    before = answer(tiny_lm, task, SMALL)
    edit = parse_arc_self_edit('{"augmentations": ["basic"], "loss": "outputs", "lr": 0.01, "epochs": 5}').edit
    rec = run_ttt(tiny_lm, task, edit, TTTConfig(lora_r=8, lora_alpha=16, max_sequences=16, views=3), seed=0)
    assert rec["loss_last"] < rec["loss_first"] / 4
    assert rec["truth_logprob"] > before["truth_logprob"] + 4  # measured: -12.0 -> -5.2
    assert answer(tiny_lm, task, SMALL)["truth_logprob"] == before["truth_logprob"]  # the adapter is gone


def test_answers_are_mapped_back_from_each_view_and_voted():
    from seal.domains.arc.augment import forward
    from seal.domains.arc.ttt import score_views

    truth = ((1, 2, 0), (0, 3, 4))
    task = ArcTask("t", [Pair(((1,),), ((1,),))], [Pair(((0,),), truth)])
    views = ("identity", "transpose", "rot90", "flip_h")
    right = [forward(v, truth) for v in views]
    texts = ["\n".join("".join(map(str, r)) for r in g) + "\n\ninput:" for g in right]
    rec = score_views(task, views, texts, 2)
    assert rec["solved"] and rec["votes_for_truth"] == 4 and rec["attempts"] == ["120\n034"]
    wrong = ["99\n99", texts[1], "no grid", "999\n999"]  # one right answer, outvoted by nothing: still an attempt
    rec = score_views(task, views, wrong, 2)
    assert rec["solved"] and rec["attempts"] == ["99\n99", "120\n034"] and rec["views"][2]["error"] == "no grid in the answer"
    assert not score_views(task, views, wrong, 1)["solved"]  # a single attempt keeps only the first


def test_domain_scores_a_scripted_self_edit_and_a_malformed_one(tiny_lm):
    domain = ArcDomain(tiny_lm, ttt=SMALL)
    [task] = domain.load_items("generated:train", 1)
    rec = domain.reward(task, EDIT, seed=1)
    assert rec["usable"] is True and rec["reward"] in (0.0, 1.0) and rec["family"] == task.family
    assert rec["self_edit"] == {"augmentations": ["basic"], "loss": "outputs", "lr": 0.001, "epochs": 1, "clamped": []}
    assert rec["n_sequences"] == 8  # the cap: 3+ leave-one-out tasks x 8 symmetries are more
    bad = domain.reward(task, '{"augmentations": ["basic"], "loss": "outputs", "lr": "fast", "epochs": 1}', seed=1)
    assert bad == {"reward": 0.0, "usable": False, "malformed": "lr must be a positive finite number", "self_edit": None}
    baseline = domain.reward(task, None, seed=1)
    assert baseline["usable"] is None and baseline["self_edit"]["augmentations"] == ["basic", "chain"]
    assert domain.no_update(task)["reward"] in (0.0, 1.0)


def test_choices_decoding_samples_self_edits_that_parse_from_the_models_log_probabilities(tiny_lm):
    from seal.domains.arc.self_edit import PREFILL
    from seal.core.packing import choice_logprobs

    domain = ArcDomain(tiny_lm, ttt=SMALL)
    [task] = domain.load_items("generated:train", 1)
    samples = domain.sample(task, 3, seed=5)
    assert all(parse_arc_self_edit(t).edit is not None for t in samples.texts)
    assert samples.sft_pairs == [[(domain.prompt(task) + PREFILL, t[len(PREFILL):])] for t in samples.texts]
    assert domain.sample(task, 3, seed=5).texts == samples.texts
    domain.sampling.temperature = 0.0
    [greedy] = domain.sample(task, 1, seed=5).texts
    first = choice_logprobs(tiny_lm, [(domain.prompt(task) + PREFILL, ['"basic"', '"size"', '"chain"', '"repeat"', "]"])])[0]
    best = ['"basic"', '"size"', '"chain"', '"repeat"', "]"][first.index(max(first))]
    assert greedy.startswith(PREFILL + best)  # the model's own most likely first choice
    with pytest.raises(Exception, match="decoding"):
        ArcDomain(tiny_lm, decoding="beam")


def test_tasks_over_the_context_budget_are_skipped_with_a_warning(tiny_lm):
    domain = ArcDomain(tiny_lm, ttt=TTTConfig(max_seq_len=60))
    with pytest.warns(UserWarning, match="skipped"):
        items = domain.load_items("generated:eval", 4)
    assert len(items) + len(domain.skipped) == 4 and domain.skipped
    assert all(s.tokens > 60 for s in domain.skipped)


def test_rest_em_runs_on_the_arc_domain(tiny_lm, tmp_path):
    from seal.rl.rest_em import RestEMConfig, run_rest_em

    cfg = RestEMConfig(data="generated:train", n=2, iterations=1, k=2, repeats=1, exclude=[])
    domain = ArcDomain(tiny_lm, ttt=TTTConfig(lora_r=8, lora_alpha=16, max_sequences=4, views=2), decoding="free")
    domain.sampling.max_new_tokens = 24
    [stats] = run_rest_em(domain, cfg, tmp_path / "arc")
    assert stats["n_kept"] == 2 and stats["skipped_tasks"] == []
    assert stats["malformed_self_edits"] == 4  # a random model does not write JSON: scored 0, never resampled
    assert all(r.startswith("no JSON object") or r.startswith("missing") for r in stats["malformed_reasons"])
    trials = [json.loads(line) for line in (tmp_path / "arc" / "work" / "iter_1" / "trials.jsonl").read_text().splitlines()]
    assert {t["sample"] for t in trials} == {"base", "default-ttt", 0, 1}
    assert (tmp_path / "arc" / "iter_1" / "adapter_model.safetensors").is_file()
    manifest = json.loads((tmp_path / "arc" / "iter_1" / GENERATOR_MANIFEST).read_text())
    assert manifest["format"] == "arc-self-edit"


def test_training_split_must_not_overlap_its_evaluation_split(tiny_lm):
    from seal.core.runtime import UsageError

    domain = ArcDomain(tiny_lm)
    items = domain.load_items("generated:eval", 2)
    domain.exclude = ["generated:eval"]
    with pytest.raises(UsageError, match="also appear"):
        domain.validate(items, 2)


def test_generation_stops_at_a_stop_string_with_the_same_greedy_text(tiny_lm):
    from seal.core.generation import Sampling

    prompts = ["input:\n12\noutput:\n", "The quick brown"]
    full = [c[0] for c in tiny_lm.generator.generate(prompts, sampling=Sampling(max_new_tokens=12))]
    ids = tiny_lm.tokenizer(full[0], add_special_tokens=False)["input_ids"]
    stop = tiny_lm.tokenizer.decode(ids[:3])
    cut = [c[0] for c in tiny_lm.generator.generate(prompts, sampling=Sampling(max_new_tokens=12, stop=(stop,)))]
    assert cut[0] == stop and full[0].startswith(stop) and len(cut[0]) < len(full[0])
    assert full[1].startswith(cut[1])  # the other sequence is the same greedy text, stopped with the batch or earlier
