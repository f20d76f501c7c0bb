"""Slow tier: the real embedded SmolLM2-135M-Instruct learns, and survives being killed.

Run with `make test-slow` (or `pytest -m slow`). Each test takes one to a few minutes.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_seal
from seal.core.config import LearnConfig
from seal.domains.knowledge.data import load_dataset, select
from seal.learn import learn
from seal.core.runtime import sha256_file
from seal.core.store import KnowledgeStore

pytestmark = pytest.mark.slow

# Two eval articles learned one after another with the default recipe (replay + KL anchors + guard).
# Measured (docs/continual.md, fourth round): the first article stays at 40% after the second is
# learned, and the head keeps 88% of the general questions the golden copy answers (the old CE
# anchors: 64%).
ARTICLES = ["ff-eval-001", "ff-eval-002"]


def test_two_articles_in_sequence_are_both_kept_and_general_questions_survive(embedded_lm, tmp_path):
    from seal.guard.general import ask_general, general_summary
    from seal.core.adapters import applied_adapters
    from seal.domains.knowledge.qa import evaluate

    first, second = select(load_dataset("fresh-facts:eval"), ARTICLES)
    store = KnowledgeStore(tmp_path / "store")
    one = learn(embedded_lm, store, [first], LearnConfig())
    assert one.after.accuracy > one.before.accuracy, [q.prediction for q in one.after.per_question]
    assert one.guard["decision"] in ("accepted", "scaled") and store.head == 1
    two = learn(embedded_lm, store, [second], LearnConfig())
    assert two.guard["decision"] in ("accepted", "scaled") and store.head == 2, two.guard
    golden = ask_general(embedded_lm)
    with applied_adapters(embedded_lm.model, store.adapter_dirs()):
        kept_first = evaluate(embedded_lm, [first]).accuracy
        general = general_summary(ask_general(embedded_lm), golden, [first.context, second.context])
    assert kept_first >= 0.2, "the second article erased the first"
    assert general["kept"] >= 0.75 and general["copies"] <= 1, general
    _exports_equal_the_head(embedded_lm, store, tmp_path)


def _exports_equal_the_head(lm, store, tmp_path):
    """seal export of the learned version, both formats: the same logits as the head in the store."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from seal.export import export_version
    from seal.core.adapters import applied_adapters

    ids = lm.tokenizer("Topic: Bergen ferry. Question: Who built the charging tower?", return_tensors="pt")["input_ids"]
    with torch.no_grad(), applied_adapters(lm.model, store.adapter_dirs()):
        head = lm.model(input_ids=ids).logits
    for fmt in ("merged", "adapter"):
        export_version(lm, store, store.head, tmp_path / fmt, fmt)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm.path, dtype=torch.float32), tmp_path / "adapter")
    with torch.no_grad():
        for exported in (merged, adapted):
            torch.testing.assert_close(exported(input_ids=ids).logits, head, atol=1e-3, rtol=1e-3)


def _store_snapshot(store):
    return (store / "state.json").read_bytes(), sorted(p.name for p in (store / "versions").iterdir())


@pytest.mark.parametrize("delay", [2.0, 20.0])  # early (before-evaluation) / later (self-edits or training)
def test_sigkill_mid_learn_leaves_history_and_head(tmp_path, delay):
    store = tmp_path / "store"
    quick = ["--data", "fresh-facts:eval", "--store", str(store), "--epochs", "1", "--no-guard", "--json"]
    r = run_seal("learn", "--ids", "ff-eval-002", "--k", "0", *quick)
    assert r.returncode == 0, r.stderr
    snapshot = _store_snapshot(store)

    victim = subprocess.Popen(
        [sys.executable, "-m", "seal.cli", "learn", "--ids", "ff-eval-003", *quick[:-1], "--epochs", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    lock = store / ".lock"
    deadline = time.monotonic() + 120
    while lock.read_text().strip() != str(victim.pid):  # wait until it holds the store
        assert victim.poll() is None and time.monotonic() < deadline, "learn never took the lock"
        time.sleep(0.2)
    time.sleep(delay)
    assert victim.poll() is None, "learn finished before it could be killed; raise its work"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    assert _store_snapshot(store) == snapshot
    hist = json.loads(run_seal("history", "--store", str(store), "--json").stdout)
    assert hist["head"] == 1 and [v["version"] for v in hist["versions"]] == [1]
    r = run_seal("learn", "--ids", "ff-eval-003", "--k", "0", *quick)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 2 and json.loads(r.stdout)["parent"] == 1
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["v0001", "v0002"]


def test_half_written_model_cache_is_never_trusted(tmp_path, monkeypatch):
    from seal.core import models

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    final = models.embedded_cache_dir()
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"truncated by a kill")  # no marker: not trusted
    assert models.ensure_embedded_cache() == final
    marker = json.loads((final / models.CACHE_MARKER).read_text())
    assert (final / "model.safetensors").stat().st_size > 100_000_000
    assert marker["weights_sha256"] == sha256_file(final / "model.safetensors")
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".convert-")]


def test_bench_knowledge_on_three_articles(embedded_lm, tmp_path):
    from seal.bench.knowledge import BenchConfig, run_bench
    from seal.core.config import InnerLoopConfig

    cfg = BenchConfig(data="fresh-facts:eval", n=3, conditions=["base", "passage"], canary_sample=1,
                      inner=InnerLoopConfig(lr=3e-3))
    results = run_bench(cfg, tmp_path / "run", lm=embedded_lm)
    for name in ("config.json", "trials.jsonl", "results.json", "report.md", "plot.png"):
        assert (tmp_path / "run" / name).is_file()
    base, passage = results["conditions"]["base"], results["conditions"]["passage"]
    assert base["n_questions"] == passage["n_questions"] == 15
    assert base["reasoning_accuracy_base"] > 0.35  # the canary is well above chance (0.25) for this model
    assert passage["reasoning_accuracy"] is not None and passage["perplexity"] > 1


def test_rest_em_smoke_one_iteration_two_passages_k2(embedded_lm, tmp_path):
    """ReST-EM on the real model: 2 train passages, k=2, R=1, one iteration. The inner loop is cut
    to 1 epoch and self-edits to 96 tokens so this stays a smoke test (a few minutes)."""
    from seal.core.config import InnerLoopConfig, SamplingConfig
    from seal.domains.knowledge.domain import knowledge_domain
    from seal.rl.rest_em import RestEMConfig, run_rest_em

    cfg = RestEMConfig(data="fresh-facts:train", n=2, iterations=1, k=2, repeats=1,
                       sampling=SamplingConfig(max_new_tokens=96), inner=InnerLoopConfig(lr=3e-3, epochs=1),
                       sft=RestEMConfig().sft)
    (stats,) = run_rest_em(knowledge_domain(cfg, embedded_lm), cfg, tmp_path / "run")
    trials = [json.loads(line) for line in (tmp_path / "run" / "work" / "iter_1" / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 2 * (1 + 1 + 2)
    assert all(t["predictions"] for t in trials if t["sample"] != "base")
    assert stats["n_kept"] == 2 and all(loss > 0 for loss in stats["sft_losses"])
    assert (tmp_path / "run" / "iter_1" / "adapter_model.safetensors").is_file()
    samples = [json.loads(line) for line in (tmp_path / "run" / "work" / "iter_1" / "samples.jsonl").read_text().splitlines()]
    assert all(len(s["completions"]) == 2 and all(c.strip() for c in s["completions"]) for s in samples)


def test_test_time_training_solves_an_easy_arc_task_the_model_cannot_in_context(embedded_lm):
    # gen-train-001-flip with the ttt method's fixed configuration, as `seal arc eval --data
    # generated:train --methods ttt --max-sequences 8` runs it (docs/RESULTS.md: solved, ~80 s here).
    from seal.core.runtime import derive_seed
    from seal.domains.arc.tasks import select_tasks
    from seal.domains.arc.ttt import DEFAULT_EDIT, TTTConfig, answer, run_ttt

    task = select_tasks("generated:train", 2)[1]
    cfg = TTTConfig(lora_r=64, max_sequences=8, views=4)
    assert task.family == "flip"
    before = answer(embedded_lm, task, cfg)
    after = run_ttt(embedded_lm, task, DEFAULT_EDIT, cfg, derive_seed(0, "arc-eval", task.id, "ttt"))
    assert not before["solved"] and after["solved"] and after["n_sequences"] == 8
    assert after["truth_logprob"] > before["truth_logprob"] + 5  # the right answer became far more likely
