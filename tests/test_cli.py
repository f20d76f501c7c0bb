"""The CLI as a user runs it, in fresh processes, on the tiny model (and bad input on the default)."""

import json

import pytest

from conftest import run_seal as _run_seal

FAST = ["--epochs", "1", "--lora-r", "4", "--lora-alpha", "8", "--max-new-tokens", "24"]


def run_seal(*args, env=None, timeout=900):
    """The tiny model needs no threads; one avoids OpenMP spinning when cores are shared."""
    return _run_seal(*args, env={"OMP_NUM_THREADS": "1", **(env or {})}, timeout=timeout)


@pytest.fixture()
def doc(tmp_path):
    path = tmp_path / "ferry.md"
    path.write_text("# Lisbon ferry\n\nIn March 2026 Volthaven supplied batteries for the ferry Maria Quiteria.\n")
    return path


@pytest.fixture()
def dataset(tmp_path):
    path = tmp_path / "items.jsonl"
    item = {"id": "p1", "title": "Porto tram", "context": "The Porto tram got new signals from Sinalux in May 2026.",
            "questions": [{"question": "Who made the new signals of the Porto tram?", "answer": "Sinalux"}]}
    path.write_text(json.dumps(item) + "\n")
    return path


def test_learn_ask_eval_history_rollback(tiny_model_dir, tmp_path, doc, dataset):
    common = ["--model", str(tiny_model_dir), "--store", str(tmp_path / "s")]
    r = run_seal("learn", str(doc), *common, *FAST, "--k", "2", "--json")
    assert r.returncode == 0, r.stderr
    one = json.loads(r.stdout)
    assert one["version"] == 1 and one["parent"] == 0 and one["n_self_edits"] == 2
    assert one["n_sequences"] >= 1 and one["train_seconds"] > 0 and one["peak_rss_mb"] > 0

    r = run_seal("learn", "--data", str(dataset), "--ids", "p1", *common, *FAST, "--json")
    assert r.returncode == 0, r.stderr
    two = json.loads(r.stdout)
    assert two["version"] == 2 and two["parent"] == 1 and two["n_questions"] == 1
    assert 0 <= two["accuracy_before"] <= 1 and 0 <= two["accuracy_after"] <= 1

    hist = json.loads(run_seal("history", "--store", str(tmp_path / "s"), "--json").stdout)
    assert hist["head"] == 2 and [v["version"] for v in hist["versions"]] == [1, 2]
    manifest = json.loads((tmp_path / "s" / "versions" / "v0002" / "manifest.json").read_text())
    assert manifest["documents"][0]["id"] == "p1" and manifest["config"]["inner"]["epochs"] == 1
    assert manifest["environment"]["device"] == "cpu" and manifest["environment"]["peft"]  # library versions, threads
    assert manifest["training_sequences"][-1] == "Porto tram\n" + json.loads(dataset.read_text())["context"]

    for extra, version in ([], 2), (["--version", "1"], 1), (["--base"], 0):
        r = run_seal("ask", "Who supplied the batteries?", "--topic", "Lisbon ferry", *common, *extra, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["version"] == version and isinstance(json.loads(r.stdout)["answer"], str)

    r = run_seal("eval", str(dataset), *common, "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert set(ev) == {"version", "n_questions", "accuracy", "exact_match", "f1", "per_question"}
    assert ev["per_question"][0]["gold"] == "Sinalux" and ev["n_questions"] == 1

    assert run_seal("rollback", "1", "--store", str(tmp_path / "s")).returncode == 0
    hist = json.loads(run_seal("history", "--store", str(tmp_path / "s"), "--json").stdout)
    assert hist["head"] == 1 and [v["active"] for v in hist["versions"]] == [True, False]
    r = run_seal("ask", "q?", *common, "--version", "7")
    assert r.returncode == 2 and "no version 7" in r.stderr


def bad_inputs(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("A real sentence about a ferry in Porto.")
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "oddmodel").mkdir()
    (tmp_path / "oddmodel" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    return {
        "missing file": (["learn", str(tmp_path / "nope.txt")], "file not found"),
        "empty file": (["learn", str(tmp_path / "empty.txt")], "empty document"),
        "binary file": (["learn", str(tmp_path / "bin.txt")], "binary file"),
        "non-UTF-8": (["learn", str(tmp_path / "latin.txt")], "not UTF-8"),
        "unknown format": (["learn", str(tmp_path / "ok.txt"), "--format", "summary"], "unknown self-edit format"),
        "nothing": (["learn"], "nothing to learn"),
        "unknown dataset": (["learn", "--data", "fresh-fact:eval"], "dataset not found"),
        "unknown id": (["learn", "--data", "fresh-facts:eval", "--ids", "zzz"], "no item with id"),
        "missing model": (["learn", str(tmp_path / "ok.txt"), "--model", str(tmp_path / "no-such-model")], "model not found"),
        "not a model": (["ask", "q?", "--model", str(tmp_path / "nomodel")], "config.json is missing"),
        "unknown model type": (["ask", "q?", "--model", str(tmp_path / "oddmodel")], "cannot load model from"),
        "eval unknown data": (["eval", str(tmp_path / "nope.json")], "dataset not found"),
        "history of no store": (["history"], "no knowledge store"),
        "train unknown reward": (["train", "knowledge", "--out", str(tmp_path / "r"), "--reward", "gold-ish"], "unknown reward"),
        "train unknown preset": (["train", "knowledge", "--out", str(tmp_path / "r"), "--preset", "gpu"], "unknown preset"),
        # square brackets in the input are printed as they are (Rich markup once dropped or choked on them)
        "brackets in a path": (["eval", str(tmp_path / "no[/such].json")], "no[/such].json"),
        "brackets in a condition": (["bench", "knowledge", "--conditions", "self-edit:x[/b]", "--out", str(tmp_path / "b")], "'x[/b]'"),
        "learn unknown strategy": (["learn", str(tmp_path / "ok.txt"), "--strategy", "merge"], "unknown strategy 'merge'"),
        "learn unknown writer": (["learn", str(tmp_path / "ok.txt"), "--writer", "teacher"], "unknown self-edit writer"),
        "continual unknown strategy": (["bench", "continual", "--out", str(tmp_path / "c"), "--strategy", "stack,stak"], "unknown strategy 'stak'"),
        "continual bad lr": (["bench", "continual", "--out", str(tmp_path / "c"), "--lr", "-1"], "lr = -1.0 is out of range"),
        "continual bad ordering": (["bench", "continual", "--out", str(tmp_path / "c"), "--sequences", "2", "--only-sequence", "2"],
                                   "orderings from 0 to 1"),
    }


BAD_CASES = [
    "missing file", "empty file", "binary file", "non-UTF-8", "unknown format", "nothing", "unknown dataset",
    "unknown id", "missing model", "not a model", "unknown model type", "eval unknown data", "history of no store",
    "train unknown reward", "train unknown preset", "brackets in a path", "brackets in a condition",
    "learn unknown strategy", "learn unknown writer", "continual unknown strategy", "continual bad lr",
    "continual bad ordering",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_leaves_store_untouched(tmp_path, case):
    args, message = bad_inputs(tmp_path)[case]
    store = tmp_path / "store"
    r = run_seal(*args, env={"SEAL_HOME": str(store)}, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not store.exists()


def test_help_keeps_square_brackets():
    r = run_seal("train", "knowledge", "--help", env={"COLUMNS": "300"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Training passages [default: all]." in r.stdout and "pip install 'seal[ray]'" in r.stdout


def test_learn_with_a_trained_generator(tiny_model_dir, tmp_path, doc):
    from seal.core.config import InnerLoopConfig, SamplingConfig
    from seal.core.models import load_model
    from seal.domains.knowledge.domain import knowledge_domain
    from seal.rl.rest_em import RestEMConfig, run_rest_em

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"id": "t", "title": "Harbour", "context": "Daesan sold cranes to the harbour in 2026.",
                                "questions": [{"question": "Who sold cranes to the harbour?", "answer": "Daesan"}]}) + "\n")
    cfg = RestEMConfig(data=str(data), iterations=1, k=2, repeats=1, exclude=[], format="rewrite",
                       sampling=SamplingConfig(max_new_tokens=12), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1),
                       sft=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1))
    run_rest_em(knowledge_domain(cfg, load_model(str(tiny_model_dir))), cfg, tmp_path / "gen")
    r = run_seal("learn", str(doc), "--model", str(tiny_model_dir), "--store", str(tmp_path / "s"), *FAST,
                 "--generator", str(tmp_path / "gen" / "iter_1"), "--json")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "s" / "versions" / "v0001" / "manifest.json").read_text())
    assert manifest["config"]["format"] == "rewrite"  # taken from the generator's manifest
    r = run_seal("learn", str(doc), "--generator", str(tmp_path), "--store", str(tmp_path / "s2"))
    assert r.returncode == 2 and "not a generator adapter folder" in r.stderr


def test_train_prints_the_iteration_table_and_resumes_with_nothing_to_do(tiny_model_dir, tmp_path, dataset):
    args = ["train", "knowledge", "--data", str(dataset), "--exclude", "", "--model", str(tiny_model_dir), "--iterations", "1",
            "--k", "2", "--repeats", "2", "--temperature", "1.0", "--out", str(tmp_path / "run")]
    r = run_seal(*args)
    assert r.returncode == 0, r.stderr
    assert "ReST-EM (" in r.stdout and f"generators: {tmp_path / 'run' / 'iter_1'}\n" in r.stdout
    assert f"plot: {tmp_path / 'run' / 'plot.png'}" in r.stdout and (tmp_path / "run" / "plot.png").is_file()
    assert "iteration 1: inner-loop trials: 7/7" in r.stderr  # base + R x (passage + k); plain progress lines: stderr is not a terminal here
    trials = (tmp_path / "run" / "work" / "iter_1" / "trials.jsonl").read_text()
    r = run_seal(*args, "--json")
    assert r.returncode == 0, r.stderr
    (stats,) = json.loads(r.stdout)
    assert stats["iteration"] == 1 and stats["std_within_self_edit"] is not None  # R = 2 measures it
    assert (tmp_path / "run" / "work" / "iter_1" / "trials.jsonl").read_text() == trials  # nothing redone


def test_the_cli_reference_is_generated_from_the_app():
    """docs/cli.md is `make docs` output: a stale reference fails here, not in a user's hands."""
    import subprocess
    import sys
    from pathlib import Path

    typer_cli = Path(sys.executable).with_name("typer")
    r = subprocess.run([str(typer_cli), "seal.cli", "utils", "docs", "--name", "seal"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    committed = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert r.stdout.strip() == committed.strip(), "docs/cli.md is stale: run `make docs`"


def test_export_from_the_cli(tiny_model_dir, tmp_path, doc):
    common = ["--model", str(tiny_model_dir), "--store", str(tmp_path / "s")]
    assert run_seal("learn", str(doc), *common, *FAST, "--k", "0").returncode == 0
    r = run_seal("export", "--out", str(tmp_path / "m"), "--format", "adapter", *common, "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["chain"] == [1] and set(record["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    r = run_seal("export", "--out", str(tmp_path / "m"), *common)  # never into a folder that holds something
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr
