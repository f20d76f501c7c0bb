"""The forgetting guard, anchors and per-epoch rehearsal in seal learn (tiny model)."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from seal.guard.anchors import golden_anchors, load_anchor_prompts
from seal.core.config import GuardConfig, InnerLoopConfig, LearnConfig, SamplingConfig
from seal.domains.knowledge.data import Passage, Question
from seal.guard.general import load_general
from seal.guard.check import Probe, chain_probes, document_probes, load_guard_questions, run_guard
from seal.core.adapters import lora_factors, scale_adapter
from seal.core.inner_loop import Rehearsal, TrainExample, lora_adapter, train
from seal.learn import learn
from seal.core.runtime import RuntimeFailure, SealError, UsageError
from seal.core.store import KnowledgeStore


def cfg(lr=5e-3, epochs=1, **guard) -> LearnConfig:
    # the guard is what these tests are about: a plain stacked learn, no rehearsal
    return LearnConfig(sampling=SamplingConfig(k=0), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=epochs, lr=lr),
                       guard=GuardConfig(**guard), strategy="stack", anchors=0)


def doc(i=0) -> Passage:
    return Passage(f"p{i}", f"Town {i}", f"Volthaven {i} supplied the ferry batteries of town {i} in March.",
                   [Question(f"Who supplied the batteries of town {i}?", f"Volthaven {i}")])


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))


def test_the_three_question_sets_are_disjoint():
    evaluation = {q.question.lower() for q in load_general()}
    guard = {q.question.lower() for q in load_guard_questions()}
    anchors = {p.lower() for p in load_anchor_prompts()}
    assert len(guard) >= 40 and len(anchors) >= 100
    assert not evaluation & guard and not evaluation & anchors and not guard & anchors


JUNK = Passage("j", "Junk", " ".join(["ferry"] * 60))  # trained hard, it moves held-out perplexity ~20% up


def test_a_destructive_edit_is_rejected_and_the_head_stays(tiny_lm, tmp_path):
    store = KnowledgeStore(tmp_path / "s")
    first = learn(tiny_lm, store, [doc(0)], cfg())
    assert first.guard["decision"] == "accepted" and store.head == 1
    assert first.guard["checks"][0]["perplexity"] == pytest.approx(first.guard["golden"]["perplexity"], rel=0.01)
    # the tiny random model is hard to damage, so the budget is tight: 10% more perplexity, no scales to try
    bad = learn(tiny_lm, store, [JUNK], cfg(lr=0.05, epochs=30, perplexity_ratio=1.1, scales=()))
    g = bad.guard
    assert g["decision"] == "rejected" and not bad.head_moved and g["checks"][0]["over"] == ["perplexity"]
    assert store.head == 1 and store.state()["versions"] == [1, 2]  # stored, listed, not head
    assert store.manifest(2)["guard"]["decision"] == "rejected"
    # a lost state.json is rebuilt with the latest version the guard did not reject as head
    (store.root / "state.json").unlink()
    assert KnowledgeStore(store.root).head == 1
    # --force: the same edit becomes head, recorded as forced
    forced = learn(tiny_lm, store, [JUNK], cfg(lr=0.05, epochs=30, perplexity_ratio=1.1, scales=(), force=True))
    assert forced.guard["decision"] == "forced" and forced.head_moved and store.head == 3


def _junk_adapter(lm, folder: Path) -> Path:
    c = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=30, lr=0.05)
    with lora_adapter(lm.model, c, 0) as m:
        train(m, lm.tokenizer, [TrainExample(JUNK.context)], c, 0)
        m.save_pretrained(folder, safe_serialization=True)
    return folder


def test_an_oversized_delta_is_scaled_until_it_fits_and_stored_scaled(tiny_lm, tmp_path):
    folder = _junk_adapter(tiny_lm, tmp_path / "a")
    _, _, trained = lora_factors(folder)
    g = run_guard(tiny_lm, GuardConfig(perplexity_ratio=1.1, scales=()), [], [folder], [], [])
    assert g["decision"] == "rejected" and g["checks"][0]["over"] == ["perplexity"]
    g = run_guard(tiny_lm, GuardConfig(perplexity_ratio=1.1, scales=(0.5, 0.25, 0.01)), [], [folder], [], [])
    assert g["decision"] == "scaled" and g["scale"] < 1 and [c["scale"] for c in g["checks"]][-1] == g["scale"]
    assert all(c["over"] for c in g["checks"][:-1]) and not g["checks"][-1]["over"]
    _, _, now = lora_factors(folder)
    name = next(iter(now))
    assert (now[name][1] - trained[name][1] * g["scale"]).abs().max() < 1e-6  # what is stored is what was measured


def test_a_candidate_measured_nan_is_rejected_even_when_forced(tiny_lm, tmp_path):
    # NaN fails every comparison: "nan > budget" is False, and the guard once committed such a head
    folder = _junk_adapter(tiny_lm, tmp_path / "a")
    scale_adapter(folder, float("nan"))  # the weights a diverged step leaves
    for force in (False, True):
        g = run_guard(tiny_lm, GuardConfig(force=force, scales=(0.5,)), [], [folder], [], [])
        assert g["decision"] == "rejected" and "perplexity" in g["reason"] and "not a finite number" in g["reason"]
        assert all("perplexity" in c["not_finite"] and "perplexity" in c["over"] for c in g["checks"])
        assert "probe_flags" not in g  # nothing of a rejected candidate is reused by the next learn


def test_a_learn_whose_weights_diverged_keeps_nothing(tiny_lm, tmp_path, monkeypatch):
    import seal.learn

    def diverging(*args, keep=None, **kw):  # the real inner loop, then the last step's blow-up
        out = real(*args, keep=keep, **kw)
        scale_adapter(keep, float("inf"))
        return out

    real = seal.learn.run_inner_loop
    monkeypatch.setattr(seal.learn, "run_inner_loop", diverging)
    store = KnowledgeStore(tmp_path / "s")
    with pytest.raises(RuntimeFailure, match="training diverged: the trained adapter holds NaN or infinite weights"):
        learn(tiny_lm, store, [doc(0)], cfg(enabled=False))  # no guard: the check is learn's own
    assert store.head == 0 and store.state()["versions"] == [] and not list((store.root / "tmp").iterdir())


def test_disk_full_while_the_adapter_is_saved_is_one_line_and_changes_nothing(tiny_lm, tmp_path, monkeypatch):
    import errno

    import seal.core.inner_loop

    store = KnowledgeStore(tmp_path / "s")
    learn(tiny_lm, store, [doc(0)], cfg(enabled=False))
    state = (store.root / "state.json").read_bytes()

    def full(_model, _folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(seal.core.inner_loop, "save_adapter", full)
    with pytest.raises(RuntimeFailure) as e:
        learn(tiny_lm, store, [doc(1)], cfg(enabled=False))
    assert str(e.value) == f"learning into store {store.root} failed: No space left on device; the head is unchanged"
    assert (store.root / "state.json").read_bytes() == state and store.head == 1
    assert [p.name for p in (store.root / "versions").iterdir()] == ["v0001"] and not list((store.root / "tmp").iterdir())

    def full_safetensors(_model, _folder):  # how safetensors itself reports it: not an OSError
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(seal.core.inner_loop, "save_adapter", full_safetensors)
    with pytest.raises(RuntimeFailure, match=r"failed: Error while serializing: .*No space left on device \(os error 28\)"):
        learn(tiny_lm, store, [doc(1)], cfg(enabled=False))
    assert (store.root / "state.json").read_bytes() == state


def test_no_guard_commits_without_measuring(tiny_lm, tmp_path):
    out = learn(tiny_lm, KnowledgeStore(tmp_path / "s"), [doc(0)], cfg(lr=0.5, enabled=False))
    assert out.guard is None and out.head_moved


def test_bad_budgets_are_one_line_errors(tiny_lm, tmp_path):
    for bad in (dict(general_kept=1.5), dict(perplexity_ratio=0.5), dict(scales=(2.0,)), dict(retention=float("nan")),
                dict(perplexity_ratio=float("inf")), dict(canary_drop=float("inf")), dict(scales=(float("nan"),))):
        with pytest.raises(UsageError, match="guard"):
            learn(tiny_lm, KnowledgeStore(tmp_path / "s"), [doc(0)], cfg(**bad))


def test_scale_adapter_scales_the_delta_exactly(tiny_lm, tmp_path):
    c = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-2)
    with lora_adapter(tiny_lm.model, c, 0) as m:
        train(m, tiny_lm.tokenizer, [TrainExample("Volthaven built it.")], c, 0)
        m.save_pretrained(tmp_path / "a", safe_serialization=True)
    _, _, before = lora_factors(tmp_path / "a")
    scale_adapter(tmp_path / "a", 0.25)
    _, _, after = lora_factors(tmp_path / "a")
    for name, (a, b) in before.items():
        assert (after[name][0] == a).all() and (after[name][1] - b * 0.25).abs().max() < 1e-7


def test_probes_are_gold_questions_or_the_models_own_sentence_pairs():
    p = doc(0)
    assert [pr.kind for pr in document_probes(p, [], 0)] == ["gold"]
    user = Passage("u", "Heat pump", "The pump cost 214 million kroner. It opened in May.")
    seqs = ["Q: What did the pump cost?\nA: The pump cost 214 million kroner.", "not a pair"]
    assert document_probes(user, seqs, 0) == [Probe("What did the pump cost?", "Heat pump", "The pump cost 214 million kroner.", "self")]
    manifests = [{"probes": [{"question": "a", "topic": None, "answer": "b", "kind": "self"}]},
                 {"inherited_probes": [{"question": "c", "topic": "t", "answer": "d", "kind": "gold"}], "probes": []}]
    assert [pr.question for pr in chain_probes(manifests)] == ["a", "c"]


def test_learn_stores_probes_and_the_next_learn_checks_them(tiny_lm, tmp_path):
    store = KnowledgeStore(tmp_path / "s")
    learn(tiny_lm, store, [doc(0)], cfg())
    assert store.manifest(1)["probes"][0]["kind"] == "gold"
    second = learn(tiny_lm, store, [doc(1)], cfg())
    assert second.guard["n_earlier_probes"] == 1
    # the head's answers to its probes are read from its own guard decision, not asked again
    first_flags = store.manifest(1)["guard"]["probe_flags"]
    assert len(first_flags) == 1 and second.guard["head_probes_reused"]
    assert second.guard["head_probes_known"] == sum(first_flags)
    assert len(store.manifest(2)["guard"]["probe_flags"]) == 2  # earlier, then its own
    from seal.guard.check import ask_probes, chain_probes

    asked = ask_probes(tiny_lm, chain_probes([store.manifest(1)]), store.adapter_dirs(1))
    assert asked == first_flags  # what asking again gives


# -- rehearsal and anchors -----------------------------------------------------------------------

def test_rehearsal_trains_a_fresh_sample_each_epoch(tiny_lm):
    c = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=3, lr=5e-3)
    pool = [TrainExample(f"Fact {i}.") for i in range(10)]
    r = Rehearsal(pool, 2)
    samples = [r.sample(0, e, 0) for e in range(3)]
    assert all(len(s) == 2 for s in samples) and len({tuple(x.completion for x in s) for s in samples}) > 1
    assert Rehearsal(pool[:1], 5).sample(0, 0, 0) == pool[:1]
    with lora_adapter(tiny_lm.model, c, 0) as m:
        res = train(m, tiny_lm.tokenizer, [TrainExample("New fact.")], c, 0, rehearsal=(r,))
    assert res.steps == 3 * 3


def test_anchors_are_the_golden_copys_answers_cached(tiny_lm, tmp_path):
    prompts = ["Say hello.", "Name a colour."]
    first = golden_anchors(tiny_lm, prompts)
    files = list((tmp_path / "cache" / "anchors").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["prompts"] == prompts
    assert golden_anchors(tiny_lm, prompts) == first
    assert all(ex.prompt and "Say hello." in first[0].prompt for ex in first)


def test_learn_with_anchors_records_its_rehearsal(tiny_lm, tmp_path):
    store = KnowledgeStore(tmp_path / "s")
    c = cfg(enabled=False)
    c.anchors = 3
    learn(tiny_lm, store, [doc(0)], c)
    anchors = store.manifest(1)["rehearsal"]["anchors"]
    assert anchors["per_epoch"] == 3 and 0 < anchors["pool"] <= len(load_anchor_prompts())  # empty answers are left out
    with pytest.raises(SealError, match="anchors"):
        c.anchors = -1
        learn(tiny_lm, store, [doc(0)], c)


def test_anchor_prompts_file_ignores_comments(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("# comment\nWhat is up?\n\n  # another\nSay hi.\n")
    assert load_anchor_prompts(Path(f)) == ["What is up?", "Say hi."]


def test_learn_with_distilled_anchors_and_prose_records_them(tiny_lm, tmp_path):
    from seal.guard.anchors import golden_prose, load_prose_openers

    store = KnowledgeStore(tmp_path / "s")
    c = cfg(enabled=False)
    c.anchors, c.anchor_loss, c.anchor_topk, c.anchor_weight, c.prose = 2, "kl", 4, 0.5, 2
    learn(tiny_lm, store, [doc(0)], c)
    reh = store.manifest(1)["rehearsal"]
    assert reh["anchors"] == {"pool": reh["anchors"]["pool"], "per_epoch": 2, "weight": 0.5, "loss": "kl"}
    assert reh["prose"]["per_epoch"] == 2 and reh["prose"]["loss"] == "kl"
    assert len(list((tmp_path / "cache" / "prose").glob("*.json"))) == 1  # generated once, cached
    assert golden_prose(tiny_lm)[0].completion.startswith(load_prose_openers()[0])
    for bad in (dict(anchor_loss="mse"), dict(anchor_weight=-1.0), dict(prose=-1), dict(anchor_focus=-1.0),
                dict(anchor_focus=float("nan")), dict(anchor_focus=2.0, anchor_loss="ce")):
        with pytest.raises(SealError):
            learn(tiny_lm, store, [doc(0)], LearnConfig(**{**c.__dict__, **bad}))
    learn(tiny_lm, store, [doc(1)], LearnConfig(**{**c.__dict__, "anchor_focus": 2.0}))
    assert store.manifest(2)["rehearsal"]["anchors"]["focus"] == 2.0


def test_learn_with_mixed_rehearsal_takes_one_step_per_new_example(tiny_lm, tmp_path):
    store = KnowledgeStore(tmp_path / "s")
    c = cfg(enabled=False)
    c.anchors, c.anchor_loss, c.anchor_topk = 3, "kl", 4
    c.inner.mix_rehearsal = True
    learn(tiny_lm, store, [doc(0)], c)
    m = store.manifest(1)
    steps = len(m["training_examples"]) * c.inner.epochs  # the anchors ride along in those steps
    assert m["config"]["inner"]["mix_rehearsal"] and len(m["metrics"]["losses"]) == steps


def test_the_golden_teacher_is_cached_on_disk_bit_exact(tiny_lm, tmp_path):
    import torch

    from seal.core.inner_loop import teacher_topk, tokenize_example
    from seal.guard import anchors

    pool = golden_anchors(tiny_lm)[:3]
    first = anchors.golden_teacher(tiny_lm, pool, 4, 64)
    files = list((tmp_path / "cache" / "teacher").glob("*.safetensors"))
    assert len(files) == 1
    anchors._TEACHERS.clear()  # a new process: read from disk
    again = anchors.golden_teacher(tiny_lm, pool, 4, 64)
    fresh = teacher_topk(tiny_lm.model, [tokenize_example(tiny_lm.tokenizer, e, 64)[0] for e in pool], 4)
    for (a_ids, a_lp), (b_ids, b_lp), (c_ids, c_lp) in zip(first, again, fresh):
        assert torch.equal(a_ids, b_ids) and torch.equal(a_lp, b_lp) and torch.equal(b_ids, c_ids) and torch.equal(b_lp, c_lp)
    files[0].write_bytes(b"not a tensor file")  # damaged: computed again, not trusted
    anchors._TEACHERS.clear()
    assert all(torch.equal(x[1], y[1]) for x, y in zip(anchors.golden_teacher(tiny_lm, pool, 4, 64), fresh))


def _unpacked_logprobs(lm, context: str, choice: str) -> float:
    """The plain way: context + choice on one row of its own, log p of the choice's tokens."""
    import torch

    tok = lm.tokenizer
    c = tok("", add_special_tokens=True)["input_ids"] + tok(context, add_special_tokens=False)["input_ids"]
    x = tok(choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([c + x])).logits.float(), -1)[0]
    return float(sum(logp[len(c) - 1 + t, x[t]] for t in range(len(x))))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_choice_scores_equal_scoring_each_choice_alone(tiny_lm, attention):
    from seal.core.packing import choice_logprobs
    from seal.guard.canary import load_canary, scoring_items

    items = scoring_items(load_canary()[:7])
    items.append(("Question: Is it?\nAnswer:", [" yes", " no, not at all, never in a long while"]))  # uneven lengths
    before = tiny_lm.model.config._attn_implementation
    tiny_lm.model.config._attn_implementation = attention
    try:
        packed = choice_logprobs(tiny_lm, items, batch_size=3)  # rows of different widths in one batch
        alone = [[_unpacked_logprobs(tiny_lm, c, x) for x in xs] for c, xs in items]
    finally:
        tiny_lm.model.config._attn_implementation = before
    assert [len(s) for s in packed] == [len(xs) for _, xs in items]
    assert packed == [pytest.approx(s, abs=1e-4) for s in alone]


def test_golden_copy_caches_refuse_weights_that_carry_adapters(tiny_lm, tmp_path):
    """They are cached under the base model's checksum: computed from adapted weights, every later
    learn would rehearse and measure against the wrong model."""
    from seal.core.adapters import applied_adapters, save_adapter
    from seal.guard.anchors import golden_prose, golden_teacher
    from seal.guard.check import golden_reference

    c = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-2)
    pool = [TrainExample("Paris.", prompt="Capital of France? (golden copy test)")]
    computes = {"the anchors' golden answers": lambda: golden_anchors(tiny_lm, load_anchor_prompts()[:2]),
                "the golden teacher": lambda: golden_teacher(tiny_lm, pool, 4, 64),
                "the golden prose": lambda: golden_prose(tiny_lm, ["The harbour"]),
                "the guard's golden reference": lambda: golden_reference(tiny_lm, load_guard_questions()[:2])}
    with lora_adapter(tiny_lm.model, c, 0) as m:
        train(m, tiny_lm.tokenizer, [TrainExample("Volthaven built it.")], c, 0)
        save_adapter(m, tmp_path / "a")
        with pytest.raises(RuntimeFailure, match="the golden teacher must come from the golden copy"):
            computes["the golden teacher"]()  # a trial's live LoRA adapter
    with applied_adapters(tiny_lm.model, [tmp_path / "a"]):
        for what, compute in computes.items():
            with pytest.raises(RuntimeFailure, match=f"{what} must come from the golden copy"):
                compute()
    for compute in computes.values():  # the base weights again: computed
        assert compute()


def test_learn_computes_the_golden_caches_from_the_base_weights_on_top_of_a_head(tiny_lm, tmp_path, monkeypatch):
    """A learn on top of a head (whose chain it trains through) and with every golden cache cold:
    each is computed, and with the base weights (else check_base_weights refuses)."""
    store = KnowledgeStore(tmp_path / "s")
    learn(tiny_lm, store, [doc(0)], cfg())
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cold"))
    heavy = dataclasses.replace(cfg(), anchors=2, prose=1)
    out = learn(tiny_lm, store, [doc(1)], heavy)
    assert out.guard["decision"] != "rejected" and store.head == 2 and store.manifest(2)["rehearsal"]["prose"]["loss"] == "kl"
    assert {p.name for p in (tmp_path / "cold").iterdir()} >= {"anchors", "teacher", "prose", "guard"}
