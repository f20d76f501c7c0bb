"""`seal arc eval` on the tiny model: records, results, resume, refusals."""

from __future__ import annotations

import json

import pytest

from seal.domains.arc.evaluate import ORACLE_GRID, ArcEvalConfig, report_arc_eval, run_arc_eval
from seal.domains.arc.ttt import DEFAULT_EDIT, TTTConfig
from seal.core.runtime import UsageError

from conftest import run_seal


def small_cfg(**kw) -> ArcEvalConfig:
    return ArcEvalConfig(**{"data": "generated:eval", "n": 2, "methods": ["icl", "ttt", "self-edit"],
                            "ttt": TTTConfig(lora_r=8, lora_alpha=16, max_sequences=3, views=2), **kw})


def test_eval_writes_records_and_results_and_resumes(tiny_lm, tmp_path):
    out = tmp_path / "run"
    res = run_arc_eval(small_cfg(decoding="free"), out, tiny_lm)
    trials = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 6 and {t["method"] for t in trials} == {"icl", "ttt", "self-edit"}
    for t in trials:
        assert t["reward"] in (0.0, 1.0) and t["seconds"] >= 0 and t["peak_rss_mb"] > 0
        assert ("truth_logprob" in t) == (t.get("usable") is not False)  # a malformed self-edit is never trained nor asked
    edit = [t for t in trials if t["method"] == "self-edit"]
    assert all("self_edit_text" in t and t["usable"] is False and t["malformed"] for t in edit)  # a random model
    ttt = [t for t in trials if t["method"] == "ttt"]
    assert all(t["n_sequences"] == 3 and t["self_edit"]["augmentations"] == ["basic", "chain"] for t in ttt)
    m = res["methods"]
    assert set(m) == {"icl", "ttt", "self-edit"} and m["self-edit"]["malformed_self_edits"] == 2
    assert m["icl"]["n_tasks"] == 2 and m["icl"]["rate"] == m["icl"]["solved"] / 2
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    assert json.loads((out / "config.json").read_text())["seal_run"] == "arc-eval"
    assert (out / "attempts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(attempts.png)" in (out / "report.md").read_text()
    (out / "results.json").unlink()
    (out / "attempts.png").unlink()
    assert report_arc_eval(out) == json.loads(json.dumps(res))  # recomputed from the records alone
    assert (out / "attempts.png").is_file()  # redrawn too: the tasks are read again, no model
    before = (out / "trials.jsonl").read_text()
    run_arc_eval(small_cfg(decoding="free"), out, tiny_lm)  # resumes: nothing left to run
    assert (out / "trials.jsonl").read_text() == before
    with pytest.raises(UsageError, match="different config"):
        run_arc_eval(small_cfg(n=3, decoding="free"), out, tiny_lm)
    with pytest.raises(UsageError, match="decoding"):
        run_arc_eval(small_cfg(), out, tiny_lm)  # the default decoding is choices
    assert all(t["self_edit"]["lr"] == DEFAULT_EDIT.lr for t in ttt)


def test_choices_decoding_makes_every_self_edit_usable_and_old_configs_read_as_free(tiny_lm, tmp_path):
    from seal.domains.arc.evaluate import check_config
    from seal.core.config import as_json

    res = run_arc_eval(small_cfg(n=1, methods=["self-edit"]), tmp_path / "run", tiny_lm)
    (t,) = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert t["usable"] is True and t["n_sequences"] == 3 and "truth_logprob" in t  # trained and asked
    assert res["methods"]["self-edit"]["malformed_self_edits"] == 0 and res["config"]["decoding"] == "choices"
    old = {k: v for k, v in as_json(small_cfg()).items() if k != "decoding"}  # written before the field existed
    assert check_config(old).decoding == "free"


def test_ttt_lr_sets_the_fixed_configurations_learning_rate(tiny_lm, tmp_path):
    res = run_arc_eval(small_cfg(n=1, methods=["ttt"], ttt_lr=3e-3), tmp_path / "run", tiny_lm)
    (t,) = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert t["self_edit"]["lr"] == 3e-3 and res["config"]["ttt_lr"] == 3e-3
    with pytest.raises(UsageError, match="--ttt-lr"):
        run_arc_eval(small_cfg(ttt_lr=3.0), tmp_path / "bad", tiny_lm)


def test_cli_refuses_unknown_methods_and_data_in_one_line(tiny_model_dir, tmp_path):
    r = run_seal("arc", "eval", "--methods", "icl,magic", "--out", str(tmp_path / "a"), "--model", str(tiny_model_dir))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown method(s) magic" in r.stderr
    r = run_seal("arc", "eval", "--data", "arc-9:eval", "--out", str(tmp_path / "b"), "--model", str(tiny_model_dir))
    assert r.returncode == 2 and "unknown ARC data" in r.stderr and not (tmp_path / "b").exists()


def test_arc_train_then_the_seal_and_oracle_methods(tiny_model_dir, tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    small = ["--model", str(tiny_model_dir), "--max-sequences", "3", "--views", "2", "--lora-r", "8"]
    r = run_seal("arc", "train", "--n", "2", "--k", "2", "--out", str(tmp_path / "none"), *small)
    assert r.returncode == 1 and "no self-edit kept" in r.stderr  # a random model solves nothing: nothing to keep
    r = run_seal("arc", "train", "--n", "2", "--k", "2", "--min-reward", "0", "--out", str(tmp_path / "train"), "--json", *small)
    assert r.returncode == 0, r.stderr
    (stats,) = json.loads(r.stdout)
    assert stats["iteration"] == 1 and stats["n_kept"] == 2  # through the one outer loop (rl.rest_em)
    assert stats["malformed_self_edits"] == 0  # choices decoding (the default): every self-edit parses
    assert json.loads((tmp_path / "train" / "config.json").read_text())["format"] == "arc-self-edit/choices"
    generator = tmp_path / "train" / "iter_1"
    assert (generator / "adapter_model.safetensors").is_file()
    r = run_seal("arc", "eval", "--methods", "seal", "--out", str(tmp_path / "x"), "--model", str(tiny_model_dir))
    assert r.returncode == 2 and "needs --generator" in r.stderr
    res = run_arc_eval(small_cfg(n=1, methods=["seal", "oracle"], generator=str(generator)), tmp_path / "eval", tiny_lm)
    trials = {t["method"]: t for t in map(json.loads, (tmp_path / "eval" / "trials.jsonl").read_text().splitlines())}
    assert trials["seal"]["self_edit_text"].startswith('{"augmentations": [')
    oracle = trials["oracle"]
    assert 1 <= len(oracle["tried"]) <= len(ORACLE_GRID) and oracle["oracle_grid"] == len(oracle["tried"]) - 1
    assert oracle["reward"] == float(oracle["tried"][-1]["solved"]) and not any(t["solved"] for t in oracle["tried"][:-1])
    assert res["methods"]["seal"]["paper_rate_percent"] == 72.5 and res["methods"]["oracle"]["paper_rate_percent"] == 100.0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| seal | " in report and "| oracle | " in report


def test_attempts_figure_shows_solved_tasks_first_and_says_what_each_method_answered():
    from seal.domains.arc.figures import pick_tasks, shown_attempt
    from seal.domains.arc.grids import grid_text
    from seal.domains.arc.tasks import select_tasks

    tasks = select_tasks("generated:eval", 3)
    expected = tasks[0].test[0].output
    wrong = tuple(tuple((v + 1) % 10 for v in row) for row in expected)
    assert shown_attempt({"attempts": [grid_text(wrong), grid_text(expected)]}, expected) == (expected, "solved")
    assert shown_attempt({"attempts": [grid_text(wrong)]}, expected) == (wrong, "wrong")
    assert shown_attempt({"attempts": ["12\n3"]}, expected) == (None, "no answer")  # not a rectangle
    assert shown_attempt({"usable": False, "reward": 0.0}, expected) == (None, "malformed self-edit")
    assert shown_attempt(None, expected) == (None, "not run")
    assert shown_attempt({"attempts": ["1"]}, expected)[1] == "wrong 1x1"
    trials = [{"task_id": tasks[0].id, "reward": 0.0}, {"task_id": tasks[2].id, "reward": 1.0}]
    assert [t.id for t in pick_tasks(tasks, trials, 4)] == [tasks[2].id, tasks[0].id]  # task 1 has no record
    assert [t.id for t in pick_tasks(tasks, trials, 1)] == [tasks[2].id]
