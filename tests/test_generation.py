"""The generation seam: generators apply the adapters they are given and leave the weights as found."""

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
