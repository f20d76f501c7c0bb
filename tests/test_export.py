"""seal export: the head leaves the store as a merged model or one adapter, with equal logits (tiny model)."""

import json

import pytest
import torch

from seal.core.config import InnerLoopConfig, LearnConfig, SamplingConfig
from seal.domains.knowledge.data import Passage
from seal.export import export_version
from seal.core.adapters import applied_adapters
from seal.learn import learn
from seal.core.runtime import UsageError
from seal.core.store import KnowledgeStore

PROMPTS = ["Porto ferry battery", "Q: Who built it? A: Volthaven built it in 2026.", "Numbers 0 1 2 3"]


def logits(model, tokenizer):
    out = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            out.append(model(input_ids=ids).logits)
    return out


@pytest.fixture()
def two_versions(tiny_lm, tmp_path):
    st = KnowledgeStore(tmp_path / "s")
    cfg = LearnConfig(sampling=SamplingConfig(k=0), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=3, lr=5e-2))
    for i in range(2):  # v2 trains on top of v1: only the chain equals the head
        learn(tiny_lm, st, [Passage(f"d{i}", f"Doc {i}", f"Volthaven built ferry {i} in Porto in 2026.")], cfg)
    cfg.inner.lora_r = 8  # a link of another rank
    learn(tiny_lm, st, [Passage("d3", "Doc 3", "Lisbon tram signals came from Sinalux.")], cfg)
    return st


def test_merged_and_adapter_exports_equal_the_head(tiny_lm, two_versions, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    st = two_versions
    with applied_adapters(tiny_lm.model, st.adapter_dirs()):
        head = logits(tiny_lm.model, tiny_lm.tokenizer)
    base = logits(tiny_lm.model, tiny_lm.tokenizer)
    assert any(not torch.allclose(h, b, atol=1e-3) for h, b in zip(head, base))  # the versions changed the model

    record = export_version(tiny_lm, st, st.head, tmp_path / "merged", "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    for a, b in zip(logits(merged, tiny_lm.tokenizer), head):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert record["chain"] == [1, 2, 3] and [d["title"] for d in record["documents"]] == ["Doc 0", "Doc 1", "Doc 3"]
    assert json.loads((tmp_path / "merged" / "seal-export.json").read_text())["files"]["model.safetensors"]

    export_version(tiny_lm, st, st.head, tmp_path / "adapter", "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 + 4 + 8 and config["lora_alpha"] == config["r"]  # ranks concatenated, scale 1
    fresh = AutoModelForCausalLM.from_pretrained(tiny_lm.path, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    for a, b in zip(logits(adapted, tiny_lm.tokenizer), head):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

    export_version(tiny_lm, st, 1, tmp_path / "v1", "merged")  # an older version
    older = AutoModelForCausalLM.from_pretrained(tmp_path / "v1", dtype=torch.float32)
    with applied_adapters(tiny_lm.model, st.adapter_dirs(1)):
        for a, b in zip(logits(older, tiny_lm.tokenizer), logits(tiny_lm.model, tiny_lm.tokenizer)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_export_refuses_what_it_cannot_do(tiny_lm, two_versions, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="not empty"):
        export_version(tiny_lm, two_versions, 1, tmp_path / "full", "merged")
    with pytest.raises(UsageError, match="no adapter to export"):
        export_version(tiny_lm, two_versions, 0, tmp_path / "a0", "adapter")
    with pytest.raises(UsageError, match="no version 9"):
        export_version(tiny_lm, two_versions, 9, tmp_path / "a9", "merged")
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep" and not (tmp_path / "a0").exists()
