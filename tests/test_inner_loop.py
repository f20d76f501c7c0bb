"""Component tests of the inner loop on the tiny random model."""

import dataclasses
import math

import pytest
import torch

from seal.core.adapters import applied_adapters, save_adapter
from seal.core.config import InnerLoopConfig
from seal.core.inner_loop import IGNORE, TrainExample, collate, lora_adapter, tokenize_example, train

CFG = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=1e-2)
FACTS = [TrainExample("Porto ferry battery 2026"), TrainExample("Volthaven built it in March", prompt="Q: Who built it?")]


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(model, snap):
    now = model.state_dict()
    assert now.keys() == snap.keys()
    for k, v in snap.items():
        assert torch.equal(now[k], v), k


def test_base_weights_bit_identical_after_a_discarded_trial(tiny_lm):
    model = tiny_lm.model
    snap = snapshot(model)
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    for seed in (1, 2):  # one loaded model serves many trials
        with lora_adapter(model, CFG, seed=seed) as pm:
            train(pm, tiny_lm.tokenizer, FACTS, CFG, seed=seed)
    assert_identical(model, snap)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_lora_changes_only_adapter_weights(tiny_lm):
    model = tiny_lm.model
    snap = snapshot(model)
    with lora_adapter(model, CFG, seed=0) as pm:
        lora_before = {n: p.detach().clone() for n, p in pm.named_parameters() if "lora_" in n}
        trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
        assert trainable == set(lora_before) and trainable
        train(pm, tiny_lm.tokenizer, FACTS, CFG, seed=0)
        changed = {n for n, p in pm.named_parameters() if "lora_" in n and not torch.equal(p, lora_before[n])}
        assert changed  # the adapter learned something
        for name, value in pm.get_base_model().state_dict().items():
            base_name = name.replace(".base_layer", "")
            if "lora_" not in name:
                assert torch.equal(value, snap[base_name]), name


def test_loss_falls_when_overfitting(tiny_lm):
    cfg = InnerLoopConfig(lora_r=8, lora_alpha=16, epochs=30, lr=1e-2)
    with lora_adapter(tiny_lm.model, cfg, seed=0) as pm:
        result = train(pm, tiny_lm.tokenizer, FACTS, cfg, seed=0)
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < 0.5 * first, (first, last)
    assert result.steps == 60 and len(result.losses) == 60


def test_prompt_and_padding_carry_no_loss(tiny_lm):
    tok = tiny_lm.tokenizer
    ids, labels = tokenize_example(tok, TrainExample("Volthaven", prompt="Q: Who built it?"), 512)
    n_prompt = len(tok("Q: Who built it?", add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[-1] == tok.eos_token_id
    short = tokenize_example(tok, TrainExample("ferry"), 512)
    long = tokenize_example(tok, TrainExample("Porto ferry battery 2026 March April"), 512)
    model = tiny_lm.model
    with torch.no_grad():
        alone = model(*[t for t in collate([short], tok.pad_token_id)][:2], labels=collate([short], tok.pad_token_id)[2]).loss
        ids_b, attn_b, lab_b = collate([short, long], tok.pad_token_id)
        assert (lab_b[0, len(short[0]):] == IGNORE).all()
        logits = model(input_ids=ids_b, attention_mask=attn_b).logits[:1]
        padded = torch.nn.functional.cross_entropy(logits[0, :-1], lab_b[0, 1:], ignore_index=IGNORE)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_training_is_deterministic(tiny_lm):
    runs = []
    for _ in range(2):
        with lora_adapter(tiny_lm.model, CFG, seed=7) as pm:
            runs.append(train(pm, tiny_lm.tokenizer, FACTS * 2, CFG, seed=7).losses)
    assert runs[0] == runs[1]


def test_stored_adapter_deltas_reproduce_the_trained_model(tiny_lm, tmp_path):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    snap = snapshot(model)
    x = torch.tensor([tok("Porto ferry battery")["input_ids"]])
    with lora_adapter(model, CFG, seed=3) as pm:
        train(pm, tok, FACTS, CFG, seed=3)
        with torch.no_grad():
            trained = model(input_ids=x).logits
        save_adapter(pm, tmp_path / "v1")
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    with applied_adapters(model, [tmp_path / "v1"]):
        with torch.no_grad():
            merged = model(input_ids=x).logits
        assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"], snap["model.layers.0.self_attn.q_proj.weight"])
    assert torch.allclose(trained, merged, atol=1e-4)
    assert_identical(model, snap)


def test_new_adapter_trains_on_top_of_applied_head(tiny_lm, tmp_path):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    snap = snapshot(model)
    with lora_adapter(model, CFG, seed=1) as pm:
        train(pm, tok, FACTS, CFG, seed=1)
        save_adapter(pm, tmp_path / "v1")
    with applied_adapters(model, [tmp_path / "v1"]):
        with lora_adapter(model, CFG, seed=2) as pm:
            train(pm, tok, FACTS, CFG, seed=2)
            save_adapter(pm, tmp_path / "v2")
    with applied_adapters(model, [tmp_path / "v1", tmp_path / "v2"]):
        pass
    assert_identical(model, snap)


def test_kl_to_teacher_is_zero_for_the_teacher_itself_and_positive_after_training(tiny_lm):
    from seal.core.inner_loop import Rehearsal, kl_to_teacher, teacher_topk

    tok, model = tiny_lm.tokenizer, tiny_lm.model
    anchor = TrainExample("Paris is the capital.", prompt="Q: Capital of France?")
    ids = tokenize_example(tok, anchor, 512)[0]
    teacher = teacher_topk(model, [ids], k=8)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    assert abs(float(kl_to_teacher(logits, teacher[0], len(ids)))) < 1e-5
    cfg = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=3, lr=1e-2)
    with lora_adapter(model, cfg, seed=0) as pm:
        result = train(pm, tok, FACTS, cfg, seed=0, rehearsal=(Rehearsal([anchor], 1, weight=0.5, teacher=teacher),))
        with torch.no_grad():
            after = float(kl_to_teacher(pm(input_ids=torch.tensor([ids])).logits[0], teacher[0], len(ids)))
    assert result.steps == 9 and all(x == x for x in result.losses)
    assert after > 0


def test_focused_teacher_weighs_only_answer_positions_by_the_teachers_margin(tiny_lm):
    """anchor_focus: positions predicting a completion token weigh 1 + f * exp(-margin); the KL
    becomes the weighted mean of the per-position KL, and focus 0 weighs nothing."""
    from seal.core.inner_loop import IGNORE, focused_teacher, kl_to_teacher, teacher_topk

    tok, model = tiny_lm.tokenizer, tiny_lm.model
    anchor = TrainExample("Paris is the capital.", prompt="Q: Capital of France?")
    ids, labels = tokenize_example(tok, anchor, 512)
    teacher = teacher_topk(model, [ids], k=8)[0]
    focused = focused_teacher(teacher, labels, 3.0)
    w = focused[2]
    margin = teacher[1][:, 0] - teacher[1][:, 1]
    for t in range(len(ids)):
        answer = t + 1 < len(labels) and labels[t + 1] != IGNORE
        assert float(w[t]) == pytest.approx(1 + 3.0 * float(torch.exp(-margin[t])) if answer else 1.0)
    assert (w > 1).sum() == sum(lab != IGNORE for lab in labels[1:])
    assert torch.equal(focused_teacher(teacher, labels, 0.0)[2], torch.ones(len(ids)))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0] * 0.5  # any student other than the teacher
    plain = float(kl_to_teacher(logits, teacher, len(ids)))
    assert float(kl_to_teacher(logits, focused_teacher(teacher, labels, 0.0), len(ids))) == pytest.approx(plain, rel=1e-5)
    n = len(ids) - 1
    per_position = [float(kl_to_teacher(logits[t:t + 2], (teacher[0][t:t + 1], teacher[1][t:t + 1]), 2)) for t in range(n)]
    expected = sum(float(w[t]) * k for t, k in enumerate(per_position)) / float(w[:n].sum())
    assert float(kl_to_teacher(logits, focused, len(ids))) == pytest.approx(expected, rel=1e-4)


def test_weight_one_plain_rehearsal_trains_exactly_as_before(tiny_lm):
    """Rehearsal with the default weight and no teacher takes the model's own loss: the default recipe is unchanged."""
    from seal.core.inner_loop import Rehearsal

    pool = [TrainExample("Berlin", prompt="Q: Capital of Germany?"), TrainExample("Rome", prompt="Q: Capital of Italy?")]
    runs = []
    for r in (Rehearsal(pool, 1), Rehearsal(pool, 1, weight=1.0, teacher=None)):
        with lora_adapter(tiny_lm.model, CFG, seed=0) as pm:
            runs.append(train(pm, tiny_lm.tokenizer, FACTS, CFG, seed=0, rehearsal=(r,)).losses)
    assert runs[0] == runs[1]


def test_packed_examples_score_and_train_as_they_would_on_rows_of_their_own(tiny_lm):
    """mix_rehearsal packs a step's examples into one row, their shared prefix read once: each
    example's loss (plain cross-entropy, or KL to its teacher, times its weight) and the gradient
    of their sum are those of each example on a row of its own."""
    from seal.core.inner_loop import _batch_loss, _packed_losses, shared_prefix, teacher_topk

    tok, model = tiny_lm.tokenizer, tiny_lm.model
    system = "System: you are a helpful assistant who answers briefly.\nQ: "
    anchor = tokenize_example(tok, TrainExample("Paris is the capital.", prompt=system + "Capital of France?"), 512)
    items = [(*tokenize_example(tok, ex, 512), 1.0, None) for ex in (
        TrainExample("Volthaven built it in March", prompt=system + "Who built it?"),
        TrainExample("Porto ferry battery 2026"),  # no prompt: starts elsewhere, packed without the prefix
        TrainExample("It holds 4 MWh.", prompt=system + "How much does it hold?"),
    )]
    items.append((*anchor, 0.5, teacher_topk(model, [anchor[0]], k=8)[0]))
    prefix = shared_prefix([x[0] for x in items])
    assert len(prefix) >= len(tok(system)["input_ids"]) - 1 and items[0][0][: len(prefix)] == prefix
    assert items[1][0][: len(prefix)] != prefix
    with lora_adapter(model, CFG, seed=0) as pm:
        train(pm, tok, FACTS, CFG, seed=0)  # move the adapter off zero, so that the KL is not ~0
        params = [p for p in pm.parameters() if p.requires_grad]
        packed = _packed_losses(pm, items, "cpu")
        packed_grads = torch.autograd.grad(torch.stack(packed).sum(), params)
        alone = [_batch_loss(pm, *collate([(it[0], it[1])], 0), [it]) for it in items]
        alone_grads = torch.autograd.grad(torch.stack(alone).sum(), params)
    assert float(packed[-1]) > 1e-4
    assert [float(x) for x in packed] == pytest.approx([float(x) for x in alone], rel=1e-4, abs=1e-6)
    for g, h in zip(packed_grads, alone_grads):
        assert torch.allclose(g, h, rtol=1e-3, atol=1e-6)


def test_mix_rehearsal_trains_the_same_examples_in_the_new_examples_steps(tiny_lm):
    from seal.core.inner_loop import Rehearsal

    pool = Rehearsal([TrainExample(f"Filler sentence number {i}.", prompt="Q: Which?") for i in range(9)], 5)
    runs = {}
    for mix in (False, True):
        cfg = dataclasses.replace(CFG, epochs=3, mix_rehearsal=mix)
        with lora_adapter(tiny_lm.model, cfg, seed=0) as pm:
            runs[mix] = train(pm, tiny_lm.tokenizer, FACTS, cfg, seed=0, rehearsal=(pool,))
    assert runs[False].steps == 3 * 7 and runs[True].steps == 3 * 2  # one step per new example
    assert runs[True].n_tokens == runs[False].n_tokens  # the same examples, every epoch
    assert len(runs[True].new_losses) == 3 and all(math.isfinite(x) for x in runs[True].losses)


def test_stop_recalled_ends_training_once_greedy_decoding_reproduces_every_question_pair(tiny_lm):
    tok = tiny_lm.tokenizer
    cfg = InnerLoopConfig(lora_r=8, lora_alpha=16, epochs=60, lr=1e-2, stop_recalled=True)
    with lora_adapter(tiny_lm.model, cfg, seed=0) as pm:
        result = train(pm, tok, FACTS, cfg, seed=0)
        assert result.epochs < cfg.epochs and len(result.recalled) == result.epochs
        assert result.recalled[-1] == 1.0 and all(r < 1.0 for r in result.recalled[:-1])
        for ex in [e for e in FACTS if e.prompt]:  # what `recalled` promises: greedy decoding from the prompt returns the completion
            ids, labels = tokenize_example(tok, ex, cfg.max_seq_len)
            n_prompt = max(1, sum(lab == IGNORE for lab in labels))  # a first token with no context is given
            out = pm.generate(torch.tensor([ids[:n_prompt]]), attention_mask=torch.ones(1, n_prompt, dtype=torch.long),
                              max_new_tokens=len(ids) - n_prompt, do_sample=False, pad_token_id=tok.pad_token_id or 0)
            assert out[0, n_prompt:].tolist() == ids[n_prompt:]


def test_stop_recalled_checks_every_example_when_none_has_a_prompt(tiny_lm, monkeypatch):
    import seal.core.inner_loop as inner_loop

    seen = []
    monkeypatch.setattr(inner_loop, "recalled", lambda model, data, device: seen.append(len(data)) or [True] * len(data))
    cfg = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=3, lr=1e-2, stop_recalled=True)
    plain = [TrainExample("Porto ferry battery 2026"), TrainExample("Volthaven built it in March")]
    with lora_adapter(tiny_lm.model, cfg, seed=0) as pm:
        assert train(pm, tiny_lm.tokenizer, plain, cfg, seed=0).epochs == 1
        assert train(pm, tiny_lm.tokenizer, FACTS, cfg, seed=0).epochs == 1
    assert seen == [2, 1]  # both plain examples; of FACTS only the question pair


def test_min_epochs_holds_off_an_early_stop(tiny_lm):
    cfg = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=4, lr=1e-2, stop_loss=1e9, min_epochs=3)
    with lora_adapter(tiny_lm.model, cfg, seed=0) as pm:
        assert train(pm, tiny_lm.tokenizer, FACTS, cfg, seed=0).epochs == 3


def test_a_cache_being_built_says_so_once_and_a_warm_one_is_silent(tmp_path, monkeypatch):
    from seal.core.models import cache_notices, cached_json

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    heard = []
    with cache_notices(heard.append):
        assert cached_json("anchors", ["k"], lambda: {"x": 1}) == {"x": 1}
        assert cached_json("anchors", ["k"], lambda: {"x": 2}) == {"x": 1}  # read back, not computed again
    assert len(heard) == 2 and "answers to the anchor prompts" in heard[0] and "done in" in heard[1]
    assert cached_json("anchors", ["other"], lambda: {"x": 3}) == {"x": 3} and len(heard) == 2  # nobody listening
