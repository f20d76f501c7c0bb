"""The Python API (seal.Seal) on the tiny model, and the README's example as written."""

import re
from pathlib import Path

import pytest

import seal
from seal import Seal, SealError
from seal.core.config import InnerLoopConfig, LearnConfig, SamplingConfig
from seal.core.runtime import UsageError

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = LearnConfig(sampling=SamplingConfig(k=0), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-3))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))


def test_learn_ask_history_rollback_export(tiny_model_dir, tmp_path):
    s = Seal(store=tmp_path / "store", model=tiny_model_dir)
    doc = tmp_path / "note.md"
    doc.write_text("# Heat pump\nThe Volthaven heat pump cost 214 million kroner. It opened in March.\n")
    outcome = s.learn([doc, "Lagos ferry batteries were supplied by Volthaven in May."], config=FAST)
    assert outcome.version == 1 and [p.title for p in outcome.passages] == ["Heat pump", ""]
    assert outcome.to_json()["guard"]["decision"] in ("accepted", "scaled")
    answer = s.ask("What did the heat pump cost?", topic="Heat pump")
    assert answer.version == 1 and isinstance(answer.text, str) and answer.to_json()["version"] == 1
    assert s.ask("What did the heat pump cost?", version=0).version == 0
    assert [v["version"] for v in s.history()] == [1] and s.history()[0]["head"]
    (row,) = s.versions()  # what `seal history` shows
    assert row["version"] == 1 and row["head"] and row["titles"] == ["", "Heat pump"] and row["guard"] in ("accepted", "scaled")
    assert s.rollback(0) == 1 and s.store.head == 0
    manifest = s.export(tmp_path / "exported", version=1, format="adapter")
    assert manifest["version"] == 1 and (tmp_path / "exported" / "adapter_config.json").is_file()


def test_options_are_learn_config_fields_and_errors_are_seal_errors(tiny_model_dir, tmp_path):
    s = Seal(store=tmp_path / "store", model=tiny_model_dir)
    with pytest.raises(SealError, match="unknown strategy"):
        s.learn("Some text to learn.", config=FAST, strategy="merge")
    with pytest.raises(TypeError):
        s.learn("Some text.", config=FAST, no_such_option=1)
    with pytest.raises(UsageError, match="empty question"):
        s.ask("  ")
    with pytest.raises(UsageError, match="cannot learn from"):
        s.learn("   ", config=FAST)
    with pytest.raises(SealError, match="no version 3"):
        s.ask("Who?", version=3)
    with pytest.raises(UsageError, match="not a generator adapter folder"):
        s.learn("Some text.", config=FAST, generator=tmp_path)
    assert s._lm is None and not s.store.exists  # refused before loading the model or creating the store


def test_a_model_in_memory_is_wrapped_and_identified_by_its_weights(tiny_lm, tiny_model_dir, tmp_path):
    a = Seal(store=tmp_path / "store", model=tiny_lm.model, tokenizer=tiny_lm.tokenizer, name="tiny")
    b = Seal(store=tmp_path / "other", model=tiny_lm.model, tokenizer=tiny_lm.tokenizer)
    assert a.lm.checksum == b.lm.checksum and len(a.lm.checksum) == 64
    a.learn("Volthaven supplied the ferry batteries in March.", config=FAST)
    with pytest.raises(UsageError, match="needs its tokenizer"):
        Seal(store=tmp_path / "x", model=tiny_lm.model)
    import torch

    with torch.no_grad():
        next(iter(tiny_lm.model.parameters())).add_(1.0)  # other weights: the store refuses them
    try:
        with pytest.raises(UsageError, match="belongs to base model"):
            Seal(store=tmp_path / "store", model=tiny_lm.model, tokenizer=tiny_lm.tokenizer)
    finally:
        with torch.no_grad():
            next(iter(tiny_lm.model.parameters())).sub_(1.0)


def test_the_readme_example_runs_as_written(tiny_model_dir, tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "from seal import Seal" in block
    # the same code, with the tiny model standing in for the embedded one and the cheap recipe
    from seal import api

    from seal.core.models import load_model

    monkeypatch.setattr(api, "load_model", lambda spec=None: load_model(str(tiny_model_dir)))
    monkeypatch.setattr(api, "LearnConfig", lambda: FAST)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("# Heat pump\nThe Volthaven heat pump cost 214 million kroner.\n")
    exec(compile(block, "README.md", "exec"), {})
    assert seal.Seal is Seal


def test_one_seal_shared_by_two_threads_asks_and_learns_without_touching_the_golden_copy(tiny_model_dir, tmp_path):
    import threading

    import torch

    torch.set_num_threads(1)
    s = Seal(store=tmp_path / "store", model=tiny_model_dir)
    s.learn("Lagos ferry batteries were supplied by Volthaven in May.", config=FAST)  # asks below add v1's deltas
    golden = {n: p.detach().clone() for n, p in s.lm.model.state_dict().items()}
    question = "Who supplied the batteries?"
    answers = {0: s.ask(question, version=0).text, 1: s.ask(question, version=1).text}
    done, errors, asked = threading.Event(), [], []

    def ask_until_done():
        try:
            while not done.is_set():  # the head's deltas added and removed, over and over, during the learn
                asked.append(s.ask(question, version=1).text)
        except Exception as e:
            errors.append(e)

    def learn():
        try:  # several epochs and the guard: long enough that every run overlapped with asks before the lock
            s.learn("Volthaven built the ferry tower in Bergen in March.", config=FAST, inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=4, lr=5e-3))
        except Exception as e:
            errors.append(e)
        finally:
            done.set()

    threads = [threading.Thread(target=ask_until_done), threading.Thread(target=learn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and s.store.state()["versions"] == [1, 2] and asked
    assert set(asked) == {answers[1]}  # every ask answered from v1, never from weights half-way through a learn
    after = s.lm.model.state_dict()
    assert all(torch.equal(golden[n], after[n]) for n in golden)  # the golden copy, bit for bit
    assert s.ask(question, version=0).text == answers[0] and s.ask(question, version=1).text == answers[1]
