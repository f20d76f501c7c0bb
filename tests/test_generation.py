"""The backend seam: generators generate and score with the adapters they are given and leave the weights as found."""

import re
from pathlib import Path

import pytest
import torch

from seal.core.config import InnerLoopConfig
from seal.core.generation import HFGenerator, Sampling, ScriptedGenerator
from seal.core.adapters import applied_adapters, save_adapter
from seal.core.inner_loop import TrainExample, lora_adapter, train

CFG = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=2, lr=5e-2)
PROMPTS = ["Porto ferry battery", "The quick brown"]
GREEDY = Sampling(max_new_tokens=8)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def identical(model, snap) -> bool:
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


@pytest.fixture()
def two_adapters(tiny_lm, tmp_path):
    out = []
    for seed, text in ((1, "Porto ferry battery 2026 Volthaven"), (2, "The quick brown Daesan cranes")):
        with lora_adapter(tiny_lm.model, CFG, seed=seed) as pm:
            train(pm, tiny_lm.tokenizer, [TrainExample(text)] * 4, CFG, seed=seed)
            save_adapter(pm, tmp_path / f"v{seed}")
        out.append(tmp_path / f"v{seed}")
    return out


def test_adapters_given_to_the_generator_equal_weights_changed_in_place(tiny_lm, two_adapters):
    snap = snapshot(tiny_lm.model)
    base = tiny_lm.generator.generate(PROMPTS, sampling=GREEDY)
    with_chain = tiny_lm.generator.generate(PROMPTS, adapters=two_adapters, sampling=GREEDY, batch_size=1)
    assert identical(tiny_lm.model, snap)  # the generator put the exact weights back
    with applied_adapters(tiny_lm.model, two_adapters):
        in_place = tiny_lm.generator.generate(PROMPTS, sampling=GREEDY)
    assert with_chain == in_place and with_chain != base
    assert "".join(tiny_lm.generator.stream(PROMPTS[0], adapters=two_adapters, sampling=GREEDY)) == with_chain[0][0]
    assert identical(tiny_lm.model, snap)


SCORED = [("Question: Who built it?\nAnswer:", [" Volthaven", " Porto ferry"]), ("The quick", [" brown fox"])]


def test_scores_with_adapters_equal_scores_of_weights_changed_in_place(tiny_lm, two_adapters):
    from seal.core.packing import choice_logprobs

    gen, snap = tiny_lm.generator, snapshot(tiny_lm.model)

    def scores(adapters=()):
        return (gen.loglikelihood(SCORED, adapters=adapters), gen.answer_logprob("Porto ferry", " battery 2026", adapters=adapters),
                gen.perplexity("The quick brown fox jumps over the lazy dog. " * 3, adapters=adapters, window=16))

    base, with_chain = scores(), scores(two_adapters)
    assert identical(tiny_lm.model, snap)  # the backend put the exact weights back
    with applied_adapters(tiny_lm.model, two_adapters):
        in_place = scores()
        assert choice_logprobs(tiny_lm, SCORED) == in_place[0]  # the packed scoring, unchanged
    assert with_chain == in_place and with_chain != base  # bit-identical, not approximately
    assert [len(s) for s in base[0]] == [2, 1] and all(x < 0 for s in base[0] for x in s) and base[2] > 1
    resident = HFGenerator(tiny_lm, resident=True)
    assert (resident.loglikelihood(SCORED, adapters=two_adapters), resident.perplexity(
        "The quick brown fox jumps over the lazy dog. " * 3, adapters=two_adapters, window=16)) == (with_chain[0], with_chain[2])
    resident.release()
    assert identical(tiny_lm.model, snap)


def test_a_scripted_generator_scores_from_its_script_and_hands_the_rest_on(tiny_lm):
    gen = ScriptedGenerator(lambda *_: None, fallback=tiny_lm.generator,
                            score=lambda c, x, a: -1.0 - len(a) if x == " Volthaven" or a else None)
    real = tiny_lm.generator.loglikelihood(SCORED)
    scored = gen.loglikelihood(SCORED)  # a choice the script leaves to the fallback is scored alone there
    assert scored[0][0] == -1.0 and scored[0][1] == pytest.approx(real[0][1], abs=1e-4) and scored[1] == pytest.approx(real[1], abs=1e-4)
    assert gen.loglikelihood(SCORED[:1], adapters=["v1"])[0][0] == -2.0
    assert gen.calls[1].prompts == [SCORED[0][0]] and gen.calls[1].adapters == (Path("v1"),) and gen.calls[1].sampling is None
    assert gen.answer_logprob("Porto", " battery") == tiny_lm.generator.answer_logprob("Porto", " battery")
    words = ScriptedGenerator(lambda *_: None, score=lambda c, x, a: -4.0)
    assert words.perplexity("two words") == pytest.approx(2.718281828 ** 2) and words.answer_logprob("a", "b") == -4.0
    with pytest.raises(AssertionError, match="no scripted score"):
        ScriptedGenerator(lambda *_: None).loglikelihood(SCORED)


def test_a_resident_generator_keeps_its_chain_and_swaps_it_exactly(tiny_lm, two_adapters):
    snap = snapshot(tiny_lm.model)
    expected = {n: tiny_lm.generator.generate(PROMPTS, adapters=two_adapters[:n], sampling=GREEDY) for n in (0, 1, 2)}
    resident = HFGenerator(tiny_lm, resident=True)
    for n in (2, 1, 2, 0, 1):
        assert resident.generate(PROMPTS, adapters=two_adapters[:n], sampling=GREEDY) == expected[n]
        assert identical(tiny_lm.model, snap) == (n == 0)  # the chain stays applied between calls
    resident.preload(two_adapters)
    assert not identical(tiny_lm.model, snap)
    resident.release()
    assert identical(tiny_lm.model, snap)
    with pytest.raises(ValueError):
        tiny_lm.generator.preload(two_adapters)


def test_sampled_completions_follow_the_seed(tiny_lm):
    hot = Sampling(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    a = tiny_lm.generator.generate(PROMPTS, sampling=hot)
    assert a == tiny_lm.generator.generate(PROMPTS, sampling=hot)
    assert [len(x) for x in a] == [3, 3]
    greedy = tiny_lm.generator.generate(PROMPTS, sampling=Sampling(max_new_tokens=8, n=3))
    assert all(len(set(x)) == 1 and len(x) == 3 for x in greedy)


def test_a_scripted_generator_records_calls_and_hands_the_rest_on(tiny_lm):
    real = tiny_lm.generator.generate(PROMPTS[1:], sampling=GREEDY)[0]
    gen = ScriptedGenerator(lambda p, s, a: "scripted" if p.startswith("Porto") else None, fallback=tiny_lm.generator)
    seen = []
    assert gen.generate(PROMPTS, sampling=Sampling(max_new_tokens=8, n=2), on_batch=seen.append) == [["scripted", "scripted"], real * 2]
    assert gen.calls[0].prompts == PROMPTS and gen.calls[0].adapters == () and seen == [2]
    gen.generate(PROMPTS[:1], adapters=["v1"], sampling=GREEDY)
    assert gen.calls[1].adapters == (Path("v1"),)
    with pytest.raises(AssertionError, match="no scripted completion"):
        ScriptedGenerator(lambda *_: None).generate(["x"], sampling=GREEDY)


def test_only_the_generation_module_calls_model_generate():
    src = Path(__file__).resolve().parents[1] / "src" / "seal"
    callers = {str(p.relative_to(src)) for p in src.rglob("*.py") if re.search(r"\.generate\((?!\[|prompts|\[prompt)", p.read_text())
               and "model.generate(" in p.read_text()}
    assert callers == {"core/generation.py"}
