"""LoRA on the top layers only (`lora_layers`): the split forward equals the whole model's."""

import dataclasses

import pytest
import torch

from seal.core.config import InnerLoopConfig
from seal.core.frozen import TopLayers, layer_count
from seal.core.inner_loop import TrainExample, collate, lora_adapter, tokenize_example, train

CFG = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=2, lr=1e-2, lora_layers=1)
FACTS = [TrainExample("Porto ferry battery 2026"), TrainExample("Volthaven built it in March", prompt="Q: Who built it?")]


def _batch(tok):
    rows = [tokenize_example(tok, ex, 64) for ex in FACTS]
    return collate(rows, tok.pad_token_id or 0)


def test_top_layers_give_the_whole_models_loss_and_gradient(tiny_lm):
    ids, attn, labels = _batch(tiny_lm.tokenizer)
    with lora_adapter(tiny_lm.model, CFG, seed=0) as pm:
        for p in pm.parameters():  # LoRA B starts at zero; give it a value so the lower layers would matter
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.5)
        grads = []
        for forward in (pm, TopLayers(pm, 1)):
            pm.zero_grad()
            loss = forward(input_ids=ids, attention_mask=attn, labels=labels).loss
            loss.backward()
            grads.append((float(loss), {n: p.grad.clone() for n, p in pm.named_parameters() if p.requires_grad}))
        (full, g_full), (split, g_split) = grads
        assert split == pytest.approx(full, rel=1e-5)
        assert g_full.keys() == g_split.keys() and all(".layers.1." in n for n in g_full)  # the top layer alone trains
        for n in g_full:
            assert torch.allclose(g_full[n], g_split[n], atol=1e-5), n


def test_training_the_top_layer_keeps_each_rows_lower_state_once(tiny_lm, monkeypatch):
    import seal.core.frozen as frozen

    made = []
    original = frozen.TopLayers.__init__

    def spy(self, model, top):
        original(self, model, top)
        made.append(self)

    monkeypatch.setattr(frozen.TopLayers, "__init__", spy)
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    with lora_adapter(tiny_lm.model, dataclasses.replace(CFG, epochs=3), seed=0) as pm:
        result = train(pm, tiny_lm.tokenizer, FACTS, dataclasses.replace(CFG, epochs=3), seed=0)
    assert result.steps == 6 and len(made) == 1 and len(made[0].kept) == 2  # 2 rows, 3 epochs: read below once each
    assert layer_count(tiny_lm.model) == 2
    assert all(torch.equal(before[k], v) for k, v in tiny_lm.model.state_dict().items())
