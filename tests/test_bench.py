"""seal bench knowledge: passage selection, statistics, resume, judge, and artefacts (tiny model)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from seal.bench.knowledge import BenchConfig, merge_runs, parse_condition, report_run, run_bench
from seal.domains.knowledge.data import select_passages
from seal.core.config import InnerLoopConfig, SamplingConfig, as_json
from seal.bench.floors import random_sentence_floor
from seal.domains.knowledge.judge import LLMJudge, parse_verdict
from seal.core.metrics import bootstrap_ci
from seal.core.remote import ChatEndpoint
from seal.core.run_records import TrialLog
from seal.core.runtime import RuntimeFailure, SealError

SEAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "seal" / "knowledge-incorporation" / "data"


@pytest.mark.skipif(not (SEAL_DATA / "squad_val.json").exists(), reason="../shared/data/seal not present")
def test_passage_selection_matches_the_papers_seed_42_shuffle():
    ours = select_passages(str(SEAL_DATA / "squad_val.json"), 20)
    theirs = json.loads((SEAL_DATA / "synthetic_data" / "eval" / "base_val.json").read_text())[:20]
    assert [p.title for p in ours] == [t["title"] for t in theirs]
    assert [p.context for p in ours] == [t["context"] for t in theirs]
    assert select_passages(str(SEAL_DATA / "squad_val.json"), 5, offset=3)[0].context == theirs[3]["context"]


def test_bundled_data_keeps_file_order():
    assert [p.id for p in select_passages("fresh-facts:eval", 2)] == ["ff-eval-001", "ff-eval-002"]


def test_bootstrap_ci():
    assert bootstrap_ci([0.4] * 10) == pytest.approx((0.4, 0.4))
    lo, hi = bootstrap_ci([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert lo < 0.5 < hi and 0 <= lo and hi <= 1
    assert bootstrap_ci([0.0, 1.0, 1.0]) == bootstrap_ci([0.0, 1.0, 1.0])  # seeded


def test_conditions_are_validated():
    assert parse_condition("self-edit:rewrite") == ("self-edit", "rewrite")
    for bad in ("self-edit:summary", "teachers", "generator:/no/such/dir"):
        with pytest.raises(SealError):
            parse_condition(bad)


@pytest.mark.parametrize("reply,verdict", [("Yes.", True), ("no", False), ("yes, it matches", True), ("NO - wrong", False), ("maybe", None), ("", None)])
def test_judge_parsing(reply, verdict):
    assert parse_verdict(reply) is verdict


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that says yes when the gold answer is in the student answer."""

    fail = False

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Judge.fail:
            self.send_response(503)
            self.end_headers()
            return
        text = body["messages"][0]["content"]
        gold = text.split("Gold answer: ")[1].split("\n")[0]
        student = text.split("Student answer: ")[1].split("\n")[0]
        reply = json.dumps({"choices": [{"message": {"content": "yes" if gold.lower() in student.lower() else "no"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_judge_over_http_and_failures_stop_the_run(judge_url):
    judge = LLMJudge(ChatEndpoint(judge_url, "fake", retries=2, backoff=0.01))
    assert judge("q", "Volthaven", "It was Volthaven").correct is True
    assert judge("q", "Volthaven", "Sinalux").correct is False
    _Judge.fail = True
    try:  # never counted as a wrong answer nor recorded as "not judged": the run stops, a rerun retries
        with pytest.raises(RuntimeFailure, match="judge request failed: .*HTTP 503 after 2 attempt"):
            judge("q", "Volthaven", "It was Volthaven")
    finally:
        _Judge.fail = False


def tiny_cfg(tmp_path, **kw):
    items = [
        {"title": f"Town {i}", "context": f"In 2026 the town {i} ferry got batteries from Volthaven {i}.",
         "questions": [{"question": f"Who supplied the batteries of the town {i} ferry?", "answer": f"Volthaven {i}"}]}
        for i in range(3)
    ]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({**it, "id": f"p{i}"}) + "\n" for i, it in enumerate(items)))
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps([{**it, "completions": [f"Volthaven {i} supplied the ferry batteries.\nThe ferry of town {i} is electric now."]} for i, it in enumerate(items)]))
    base = dict(
        data=str(data), n=2, conditions=["base", "passage", "self-edit:implications", "teacher", "gold-qa"], repeats=2,
        teacher_file=str(teacher), canary_sample=1,
        sampling=SamplingConfig(max_new_tokens=16), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1),
    )
    return BenchConfig(**{**base, **kw})


def test_bench_end_to_end_produces_every_artefact(tiny_lm, tmp_path, judge_url):
    cfg = tiny_cfg(tmp_path, judge_url=judge_url, judge_name="fake")
    results = run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    for name in ("config.json", "trials.jsonl", "results.json", "report.md", "plot.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    conds = results["conditions"]
    assert list(conds) == cfg.conditions
    for c in conds.values():
        for key in ("accuracy", "accuracy_ci95", "exact_match", "f1", "n_passages", "n_questions", "reasoning_accuracy",
                    "reasoning_accuracy_base", "seconds_per_trial", "peak_rss_mb", "judge_accuracy", "judge_agreement",
                    "short_exact_match", "short_f1", "general_kept"):
            assert key in c, key
        assert c["n_passages"] == 2 and c["n_questions"] == 2 and 0 <= c["short_f1"] <= 1
    assert conds["passage"]["repeats"] == 2 and conds["base"]["repeats"] == 1
    assert 0 <= conds["passage"]["reasoning_accuracy"] <= 1 and conds["passage"]["n_canary_adapters"] == 1
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert all("short_answer" in q for t in trials for q in t.get("per_question", []))  # recite, then answer
    assert "general_answers" in trials[0]["canary"]  # the golden copy's general answers, for the cost column
    teacher = [t for t in trials if t["condition"] == "teacher"][0]
    assert teacher["self_edits"][0]["sequences"][0].startswith("Volthaven")
    assert teacher["sequences"][-1].startswith("Town ")  # the passage is always trained on too
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| teacher |" in report and "faithfulness %" in report
    # The floor beside the headline: each tiny passage is one sentence holding its answer.
    assert results["random_sentence"] == random_sentence_floor(select_passages(cfg.data, cfg.n))
    assert results["random_sentence"]["accuracy"] == 1.0 and results["random_sentence"]["n_passages"] == 2
    assert "| random-sentence (floor, no model) | 100.0 |" in report and "scores 100.0% under the same grader" in report
    assert conds["teacher"]["faithfulness"] == 1.0 and conds["base"]["faithfulness"] is None
    gold = [t for t in trials if t["condition"] == "gold-qa"][0]
    assert gold["sequences"][0].endswith(f"Answer in a few words.<|im_end|>\n<|im_start|>assistant\nVolthaven {gold['passage_id'][1]}")


def test_resume_after_a_kill_neither_loses_nor_duplicates(tiny_lm, tmp_path):
    cfg = tiny_cfg(tmp_path, conditions=["base", "passage"], repeats=1)
    run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    path = tmp_path / "run" / "trials.jsonl"
    full = path.read_text().splitlines()
    first = json.loads(full[-1])
    # A kill mid-append: the last record is torn, and the one before it never got written.
    path.write_text("\n".join(full[:-2]) + "\n" + full[-1][: len(full[-1]) // 2])
    results = run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert sorted(keys) == sorted(json.loads(line)["key"] for line in full) and len(keys) == len(set(keys))
    rerun = [json.loads(line) for line in path.read_text().splitlines() if json.loads(line)["key"] == first["key"]][0]
    assert rerun["per_question"] == first["per_question"] and rerun["seed"] == first["seed"]  # reproducible
    assert results["conditions"]["passage"]["n_passages"] == 2
    assert TrialLog(path).done == set(keys)


def test_report_of_a_killed_run_covers_the_trials_it_has(tiny_lm, tmp_path):
    cfg = tiny_cfg(tmp_path, conditions=["base", "passage"], repeats=1)
    full = run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    path = tmp_path / "run" / "trials.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # killed during the last passage trial
    partial = report_run(tmp_path / "run")
    assert partial["conditions"]["base"] == full["conditions"]["base"]
    assert partial["conditions"]["passage"]["n_passages"] == 1
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == partial
    assert path.read_text().splitlines()[-1] == lines[-1][:20]  # reading never rewrites the log
    with pytest.raises(SealError, match="not a knowledge benchmark run folder"):
        report_run(tmp_path)
    (tmp_path / "items.jsonl").unlink()  # the data is gone: the report still renders, the floor says why not
    assert "error" in report_run(tmp_path / "run")["random_sentence"]
    assert "Floor (random-sentence): n/a (" in (tmp_path / "run" / "report.md").read_text()


def test_paired_differences_per_passage(tiny_lm, tmp_path):
    results = run_bench(tiny_cfg(tmp_path, conditions=["base", "passage"], repeats=2), tmp_path / "run", lm=tiny_lm)
    (d,) = report_run(tmp_path / "run", [("passage", "base")])["paired"]
    c = results["conditions"]
    assert d["n_passages"] == 2 and d["difference"] == pytest.approx(c["passage"]["accuracy"] - c["base"]["accuracy"])
    assert d["ci95"][0] <= d["difference"] <= d["ci95"][1] and d["better"] + d["worse"] <= 2
    assert "| passage - base | 2 |" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(SealError, match="no passage has trials of both"):
        report_run(tmp_path / "run", [("passage", "teacher")])


def test_runs_split_by_condition_merge_into_the_run_of_one_command(tiny_lm, tmp_path):
    whole = run_bench(tiny_cfg(tmp_path, conditions=["base", "passage"], repeats=1), tmp_path / "whole", lm=tiny_lm)
    run_bench(tiny_cfg(tmp_path, conditions=["passage"], repeats=1), tmp_path / "a", lm=tiny_lm)
    run_bench(tiny_cfg(tmp_path, conditions=["base"], repeats=1), tmp_path / "b", lm=tiny_lm)
    merged = merge_runs(tmp_path / "m", [tmp_path / "b", tmp_path / "a"])
    assert merged["config"] == whole["config"]
    for name in ("base", "passage"):
        for stat in ("accuracy", "accuracy_ci95", "f1", "n_passages", "reasoning_accuracy"):
            assert merged["conditions"][name][stat] == whole["conditions"][name][stat]
    keys = [json.loads(line)["key"] for line in (tmp_path / "m" / "trials.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys))  # the base canary of both sources is kept once
    # The merged folder is the one command's run folder: resuming it has nothing left to do.
    run_bench(tiny_cfg(tmp_path, conditions=["base", "passage"], repeats=1), tmp_path / "m", lm=tiny_lm)
    assert len((tmp_path / "m" / "trials.jsonl").read_text().splitlines()) == len(keys)
    with pytest.raises(SealError, match="merge into a new folder"):
        merge_runs(tmp_path / "m", [tmp_path / "a"])
    run_bench(tiny_cfg(tmp_path, conditions=["base"], repeats=1, seed=7), tmp_path / "c", lm=tiny_lm)
    with pytest.raises(SealError, match="differ in seed"):
        merge_runs(tmp_path / "m2", [tmp_path / "a", tmp_path / "c"])


def test_runs_merge_when_they_differ_only_in_settings_their_conditions_do_not_use(tiny_lm, tmp_path):
    # base never samples nor trains: its run may record another temperature, lr and teacher
    run_bench(tiny_cfg(tmp_path, conditions=["base"], sampling=SamplingConfig(temperature=1.0),
                       inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-3), teacher_file=None), tmp_path / "b", lm=tiny_lm)
    run_bench(tiny_cfg(tmp_path, conditions=["passage", "teacher"]), tmp_path / "pt", lm=tiny_lm)
    merged = merge_runs(tmp_path / "m", [tmp_path / "b", tmp_path / "pt"])
    whole = tiny_cfg(tmp_path, conditions=["base", "passage", "teacher"])
    assert merged["config"] == as_json(whole)  # sampling, inner and teacher from the run that used them
    n = len((tmp_path / "m" / "trials.jsonl").read_text().splitlines())
    run_bench(whole, tmp_path / "m", lm=tiny_lm)  # and that command resumes it with nothing to do
    assert len((tmp_path / "m" / "trials.jsonl").read_text().splitlines()) == n
    # passage trains: a passage run with another lr does not merge with one that trained
    run_bench(tiny_cfg(tmp_path, conditions=["passage"], inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-3)),
              tmp_path / "p2", lm=tiny_lm)
    with pytest.raises(SealError, match="differ in inner, which their conditions use"):
        merge_runs(tmp_path / "m2", [tmp_path / "b", tmp_path / "pt", tmp_path / "p2"])


def test_multi_mode_trains_one_adapter_for_all_passages(tiny_lm, tmp_path):
    from contextlib import contextmanager

    shown = []

    class Recorder:  # what a progress display is told
        @contextmanager
        def task(self, description, total):
            class Task:
                def advance(self, n=1, info=""):
                    shown.append((description, info))

            yield Task()

    cfg = tiny_cfg(tmp_path, conditions=["base", "passage", "teacher"], repeats=1, mode="multi")
    run_bench(cfg, tmp_path / "run", lm=tiny_lm, reporter=Recorder())
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    multi = [t for t in trials if t["condition"] == "passage"]
    assert len(multi) == 1 and multi[0]["passage_id"] == "*" and len(multi[0]["sequences"]) == 2
    # The long multi-mode trial reports where it is: each passage's self-edits, each training step.
    teacher = [info for d, info in shown if d == "teacher: one adapter for 2 passages"]
    assert teacher[:2] == ["self-edits 1/2", "self-edits 2/2"] and teacher[-1] == "answering the questions"
    assert "training step 1/" in teacher[2]


def test_changed_config_needs_fresh(tiny_lm, tmp_path):
    run_bench(tiny_cfg(tmp_path, conditions=["base"]), tmp_path / "run", lm=tiny_lm)
    with pytest.raises(SealError, match="different config"):
        run_bench(tiny_cfg(tmp_path, conditions=["base"], seed=1), tmp_path / "run", lm=tiny_lm)
    run_bench(tiny_cfg(tmp_path, conditions=["base"], seed=1), tmp_path / "run", lm=tiny_lm, fresh=True)


def test_config_records_the_environment_and_a_resume_on_another_one_is_listed_not_refused(tiny_lm, tmp_path):
    import torch

    cfg = tiny_cfg(tmp_path, conditions=["base"])
    run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    conf_path = tmp_path / "run" / "config.json"
    (env,) = json.loads(conf_path.read_text())["environments"]
    assert env["torch_threads"] == torch.get_num_threads() and env["device"] == "cpu"
    assert env["torch"] == torch.__version__ and env["transformers"] and env["peft"] and env["python"]
    run_bench(cfg, tmp_path / "run", lm=tiny_lm)  # same environment: listed once
    assert json.loads(conf_path.read_text())["environments"] == [env]
    older = {**env, "transformers": "4.56.0", "torch_threads": 2}
    conf_path.write_text(json.dumps({**json.loads(conf_path.read_text()), "environments": [older]}))
    run_bench(cfg, tmp_path / "run", lm=tiny_lm)
    assert json.loads(conf_path.read_text())["environments"] == [older, env]
    # Runs on other environments merge; the merged folder lists every source's environment once.
    run_bench(tiny_cfg(tmp_path, conditions=["passage"]), tmp_path / "p", lm=tiny_lm)
    merge_runs(tmp_path / "m", [tmp_path / "run", tmp_path / "p"])
    assert json.loads((tmp_path / "m" / "config.json").read_text())["environments"] == [older, env]


def test_moving_average_means_the_last_window_values():
    from seal.core.plots import moving_average

    assert moving_average([4.0, 2.0, 0.0, 2.0], 2) == [4.0, 3.0, 1.0, 1.0]
    assert moving_average([1.0, 3.0], 5) == [1.0, 2.0]
    assert moving_average([], 3) == []


def test_report_of_a_run_killed_before_its_first_trial(tmp_path):
    cfg = tiny_cfg(tmp_path, conditions=["passage"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(as_json(cfg)))
    canary = {"reasoning_accuracy": 0.5, "perplexity": 20.0}
    (tmp_path / "run" / "trials.jsonl").write_text(json.dumps({"key": "base-canary", "condition": "base", "canary": canary}) + "\n")
    results = report_run(tmp_path / "run")
    assert results["conditions"] == {} and results["random_sentence"] is None
    assert "Floor (random-sentence): n/a (no question asked yet)." in (tmp_path / "run" / "report.md").read_text()


def test_bench_report_prints_the_floor_beside_the_conditions(tmp_path):
    from conftest import run_seal

    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"id": "p0", "title": "Town", "context": "The ferry is named Maria. It runs on batteries.",
                                "questions": [{"question": "What is the ferry called?", "answer": "Maria"}]}) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(as_json(BenchConfig(data=str(data), conditions=["base"]))))
    q = {"passage_id": "p0", "question": "What is the ferry called?", "gold": "Maria", "prediction": "I do not know",
         "correct": False, "exact_match": False, "f1": 0.0}
    trial = {"key": "p0|base|0", "passage_id": "p0", "condition": "base", "repeat": 0, "per_question": [q],
             "sequences": [], "trial_seconds": 1.0, "canary": None}
    (run / "trials.jsonl").write_text(json.dumps(trial) + "\n")
    r = run_seal("bench", "report", str(run), env={"COLUMNS": "200"}, timeout=300)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "random-sentence (floor, no model)" in line)
    assert "50.0" in row  # one of the passage's two sentences holds the answer
    assert "scores 50.0% under the same grader (1 questions, 1 passages)" in r.stdout


def test_reports_say_what_each_condition_cost_in_general_questions(tmp_path):
    cfg = tiny_cfg(tmp_path, conditions=["base", "passage"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(as_json(cfg)))
    golden = [{"id": "g001", "prediction": "Paris.", "correct": True}, {"id": "g002", "prediction": "Tokyo.", "correct": True},
              {"id": "g003", "prediction": "Milan.", "correct": False}]
    after = [{"id": "g001", "prediction": "The ferry is named Maria and runs.", "correct": False},
             {"id": "g002", "prediction": "Tokyo.", "correct": True}, {"id": "g003", "prediction": "Rome.", "correct": True}]
    q = {"passage_id": "p0", "question": "What is the ferry called?", "gold": "Maria", "prediction": "Maria",
         "correct": True, "exact_match": True, "f1": 1.0}
    records = [
        {"key": "base-canary", "condition": "base", "canary": {"reasoning_accuracy": 0.5, "perplexity": 20.0, "general_answers": golden}},
        {"key": "p0|base|0", "passage_id": "p0", "condition": "base", "repeat": 0, "per_question": [{**q, "correct": False}],
         "sequences": [], "trial_seconds": 1.0, "canary": None},
        {"key": "p0|passage|0", "passage_id": "p0", "condition": "passage", "repeat": 0, "per_question": [q],
         "sequences": ["Town\nThe ferry is named Maria and runs on batteries."], "trial_seconds": 1.0,
         "canary": {"reasoning_accuracy": 0.4, "perplexity": 30.0, "general_answers": after}},
    ]
    (run / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    conds = report_run(run)["conditions"]
    assert conds["base"]["general_kept"] == 1.0
    assert conds["passage"]["general_kept"] == 0.5 and conds["passage"]["general_copies"] == 1  # g001 now copies the passage
    assert "| 50.0 (1.0) |" in (run / "report.md").read_text()
