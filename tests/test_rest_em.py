"""ReST-EM outer loop on the tiny model: a full iteration, resume at each stage, selection."""

import json

import pytest

from seal.core.config import InnerLoopConfig, SamplingConfig
from seal.domains.knowledge.data import Passage, Question
from seal.core.generation import ScriptedGenerator
from seal.domains.knowledge.domain import KnowledgeDomain, check_no_overlap, knowledge_domain
from seal.rl.rest_em import RestEMConfig, iteration_stats, run_rest_em, select_best
from seal.core.runtime import SealError


def cfg_for(tmp_path, **kw):
    items = [{"id": f"t{i}", "title": f"Harbour {i}", "context": f"In 2026 harbour {i} bought cranes from Daesan {i}.",
              "questions": [{"question": f"Who sold cranes to harbour {i}?", "answer": f"Daesan {i}"}]} for i in range(2)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    base = dict(data=str(data), iterations=1, k=2, repeats=2, exclude=[],
                sampling=SamplingConfig(max_new_tokens=12), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1),
                sft=InnerLoopConfig(lora_r=4, lora_alpha=8, lr=1e-3, epochs=1))
    return RestEMConfig(**{**base, **kw})


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_iteration_end_to_end(tiny_lm, tmp_path):
    cfg = cfg_for(tmp_path)
    (stats,) = run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    it = tmp_path / "run" / "iter_1"
    for name in ("adapter_model.safetensors", "adapter_config.json", "generator.json", "stats.json", "kept.jsonl"):
        assert (it / name).is_file(), name
    trials = records(tmp_path / "run" / "work" / "iter_1" / "trials.jsonl")
    assert len(trials) == 2 * (1 + 2 * (1 + 2))  # per passage: base + R x (passage + k)
    for key in ("mean_reward", "best_of_k_reward", "passage_only_reward", "share_best_beats_passage",
                "std_within_self_edit", "std_between_self_edits", "sft_losses", "seconds"):
        assert key in stats
    assert stats["n_kept"] == 2 and len(stats["sft_losses"]) == 2
    assert json.loads((it / "generator.json").read_text())["chain"] == ["iter_1"]
    assert (tmp_path / "run" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_at_each_stage_redoes_nothing_finished(tiny_lm, tmp_path):
    cfg = cfg_for(tmp_path)
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    work = tmp_path / "run" / "work" / "iter_1"
    samples, trials = records(work / "samples.jsonl"), records(work / "trials.jsonl")
    kept = (tmp_path / "run" / "iter_1" / "kept.jsonl").read_text()

    # Killed during SFT: the trials are all on disk, iter_1 never appeared.
    import shutil
    shutil.rmtree(tmp_path / "run" / "iter_1")
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    assert records(work / "trials.jsonl") == trials  # no trial was redone
    assert (tmp_path / "run" / "iter_1" / "kept.jsonl").read_text() == kept

    # Killed during the trials (one torn record) and during sampling (second passage missing).
    shutil.rmtree(tmp_path / "run" / "iter_1")
    lines = (work / "trials.jsonl").read_text().splitlines()
    (work / "trials.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    (work / "samples.jsonl").write_text(json.dumps(samples[0]) + "\n")
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    again = records(work / "trials.jsonl")
    assert sorted(t["key"] for t in again) == sorted(t["key"] for t in trials)
    assert records(work / "samples.jsonl") == samples  # same seeds, same self-edits
    assert {t["key"]: t["reward"] for t in again} == {t["key"]: t["reward"] for t in trials}


def test_best_of_k_and_ties_go_to_the_earlier_sample():
    items = [Passage("a", "T", "C", [Question("q", "x")]), Passage("b", "T", "C", [Question("q", "x")])]
    samples = {p: {"completions": ["s0", "s1", "s2"], "sft_pairs": [[(f"prompt {p}", s)] for s in ("s0", "s1", "s2")]} for p in "ab"}
    trials = [
        {"passage_id": "a", "sample": 0, "reward": 0.2}, {"passage_id": "a", "sample": 1, "reward": 0.6},
        {"passage_id": "a", "sample": 2, "reward": 0.6}, {"passage_id": "a", "sample": "passage", "reward": 0.4},
        {"passage_id": "b", "sample": 0, "reward": 0.0}, {"passage_id": "b", "sample": 1, "reward": 0.0},
        {"passage_id": "b", "sample": 2, "reward": 0.0}, {"passage_id": "b", "sample": "passage", "reward": 0.2},
    ]
    kept = select_best(items, samples, trials, 3, None, "passage")
    assert [(k["passage_id"], k["sample"], k["completion"]) for k in kept] == [("a", 1, "s1"), ("b", 0, "s0")]
    assert kept[0]["sft_pairs"] == [("prompt a", "s1")]
    assert [k["passage_id"] for k in select_best(items, samples, trials, 3, 0.0, "passage")] == ["a"]  # b's best loses to passage
    assert [k["passage_id"] for k in select_best(items, samples, trials, 3, None, "passage", min_reward=0.5)] == ["a"]
    assert select_best(items, samples, trials, 3, None, "passage", min_reward=0.7) == []  # none reached it


def test_stats_leave_the_spread_within_a_self_edit_unmeasured_with_one_repeat():
    items = [Passage("a", "T", "C", [Question("q", "x")])]
    one = [{"passage_id": "a", "sample": j, "reward": r} for j, r in enumerate((0.0, 0.5))]
    one += [{"passage_id": "a", "sample": "passage", "reward": 0.25}, {"passage_id": "a", "sample": "base", "reward": 0.0}]
    stats = iteration_stats(items, one, 2, "passage")
    assert stats["std_within_self_edit"] is None  # not 0: one repeat cannot show a spread
    assert stats["std_between_self_edits"] == pytest.approx(0.25) and stats["share_best_beats_passage"] == 1.0
    two = one + [{"passage_id": "a", "sample": 0, "reward": 1.0}, {"passage_id": "a", "sample": 1, "reward": 0.5}]
    stats = iteration_stats(items, two, 2, "passage")  # self-edit 0: 0.0 and 1.0 (std 0.5); self-edit 1: 0.5 twice (std 0)
    assert stats["std_within_self_edit"] == pytest.approx(0.25)
    assert stats["std_between_self_edits"] == pytest.approx(0.0)  # both average 0.5


def test_self_question_reward_scores_with_the_models_own_questions(tiny_lm, tmp_path):
    def quiz(prompt, sampling, adapters):  # the tiny random model writes no Q/A pairs; script the model's quiz
        if "Write five quiz questions" not in prompt:
            return None  # everything else: the tiny model itself
        n = prompt.split("Title: Harbour ", 1)[1].split()[0]
        return f"Q: Who sold cranes to harbour {n}?\nA: Daesan {n}\nQ: When?\nA: In 2026\nLet me know if ..."

    tiny_lm.generator = ScriptedGenerator(quiz, fallback=tiny_lm.generator)
    cfg = cfg_for(tmp_path, reward="self-questions", repeats=1)
    (stats,) = run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    work = tmp_path / "run" / "work" / "iter_1"
    for s in records(work / "samples.jsonl"):
        n = s["key"][1:]
        assert s["self_questions"] == [{"question": f"Who sold cranes to harbour {n}?", "answer": f"Daesan {n}"},
                                       {"question": "When?", "answer": "In 2026"}]
    updated = [t for t in records(work / "trials.jsonl") if t["sample"] != "base"]
    assert len(updated) == 2 * 3 and all(t["reward"] == t["self_question_reward"] is not None for t in updated)
    assert all(t["gold_reward"] is not None for t in updated)  # kept beside it, for the correlation
    assert "self_question_gold_correlation" in stats
    assert stats["gold"]["mean_reward"] == sum(t["gold_reward"] for t in updated if t["sample"] != "passage") / 4
    assert stats["gold"]["std_within_self_edit"] is None and "self_question_gold_correlation" not in stats["gold"]


def test_stats_correlate_the_self_question_reward_with_the_gold_one():
    items = [Passage("a", "T", "C", [Question("q", "x")])]
    trials = [{"passage_id": "a", "sample": j, "reward": s, "self_question_reward": s, "gold_reward": g}
              for j, (s, g) in enumerate(((0.0, 0.2), (0.5, 0.4), (1.0, 0.6)))]
    domain = KnowledgeDomain(None, reward_source="self-questions")  # its statistics need no model
    assert domain.iteration_stats(trials)["self_question_gold_correlation"] == pytest.approx(1.0)
    flipped = [{**t, "gold_reward": 0.8 - t["gold_reward"]} for t in trials]
    assert domain.iteration_stats(flipped)["self_question_gold_correlation"] == pytest.approx(-1.0)
    assert domain.iteration_stats(trials[:2])["self_question_gold_correlation"] is None  # too few to say
    assert iteration_stats(items, trials, 3, "passage")["mean_reward"] == pytest.approx(0.5)


def test_a_sentence_format_trains_the_generator_on_its_question_per_sentence(tiny_lm, tmp_path):
    def scripted(prompt, sampling, adapters):  # the tiny random model asks no questions
        if "Sentence: " not in prompt:
            return None  # closed-book answers: the tiny model itself
        w = prompt.rsplit("Sentence: ", 1)[1].split()[1]  # the sentence's second word
        return [f" What did {w} do, take {j}?\nSentence: more" if w != "cranes" or j else "..." for j in range(sampling.n)]

    tiny_lm.generator = ScriptedGenerator(scripted, fallback=tiny_lm.generator)
    data = tmp_path / "two.jsonl"
    data.write_text(json.dumps({"id": "h", "title": "Harbour", "context": "In 2026 harbour 7 bought cranes. The cranes came by ship.",
                                "questions": [{"question": "What did harbour 7 buy?", "answer": "cranes"}]}) + "\n")
    with pytest.raises(SealError, match="samples greedily"):
        greedy = cfg_for(tmp_path, data=str(data), format="sentence-recall")
        run_rest_em(knowledge_domain(greedy, tiny_lm), greedy, tmp_path / "greedy")
    cfg = cfg_for(tmp_path, data=str(data), format="sentence-recall", repeats=1, sampling=SamplingConfig(temperature=1.0))
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    (sample,) = records(tmp_path / "run" / "work" / "iter_1" / "samples.jsonl")
    assert sample["completions"][1] == ("Q: What did 2026 do, take 1?\nA: In 2026 harbour 7 bought cranes.\n"
                                        "Q: What did cranes do, take 1?\nA: The cranes came by ship.")
    assert [c for _, c in sample["sft_pairs"][0]] == [" What did 2026 do, take 0?\n"]  # sentence 2 asked nothing
    assert [p.endswith(f"Sentence: {s}\nQuestion:") for (p, _), s in zip(sample["sft_pairs"][1], ("In 2026 harbour 7 bought cranes.",
                                                                                                 "The cranes came by ship."))] == [True, True]
    (kept,) = records(tmp_path / "run" / "iter_1" / "kept.jsonl")
    assert kept["sft_pairs"] == sample["sft_pairs"][kept["sample"]]


def test_refuses_training_on_evaluation_passages(tmp_path):
    from seal.domains.knowledge.data import load_dataset

    with pytest.raises(SealError, match="also appear in the evaluation set"):
        check_no_overlap(load_dataset("fresh-facts:eval")[:2], ["fresh-facts:eval"])
    check_no_overlap(load_dataset("fresh-facts:train"), ["fresh-facts:eval"])


def test_default_exclude_holds_out_the_test_split():
    import inspect

    from seal.cli.train import knowledge
    from seal.domains.knowledge.data import load_dataset

    default = RestEMConfig().exclude
    assert default == ["fresh-facts:eval", "fresh-facts:test"]
    assert inspect.signature(knowledge).parameters["exclude"].default.default.split(",") == default
    with pytest.raises(SealError, match="also appear in the evaluation set fresh-facts:test"):
        check_no_overlap(load_dataset("fresh-facts:test")[:1], default)
    check_no_overlap(load_dataset("fresh-facts:train"), default)


def test_generator_plugs_into_the_benchmark(tiny_lm, tmp_path):
    from seal.bench.knowledge import BenchConfig, run_bench

    cfg = cfg_for(tmp_path)
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "run")
    bench = BenchConfig(data=cfg.data, conditions=[f"generator:{tmp_path / 'run' / 'iter_1'}"], canary_sample=0,
                        sampling=SamplingConfig(max_new_tokens=12), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1))
    results = run_bench(bench, tmp_path / "bench", lm=tiny_lm)
    assert list(results["conditions"]) == bench.conditions


def _comparable(path):
    """Trial records without wall-clock fields, keyed by trial."""
    return {t["key"]: {k: v for k, v in t.items() if not k.endswith("seconds")} for t in records(path)}


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    from seal.rl.ray_executor import RayExecutor

    with RayExecutor(workers=2) as ex:
        yield ex


def test_ray_and_local_executors_give_identical_records(tiny_lm, tmp_path, ray_executor):
    cfg = cfg_for(tmp_path, iterations=2)  # iteration 2 runs its trials on the iter_1 generator
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "local")
    run_rest_em(knowledge_domain(cfg, tiny_lm), cfg, tmp_path / "ray", executor=ray_executor)
    for it in ("iter_1", "iter_2"):
        local, remote = (_comparable(tmp_path / run / "work" / it / "trials.jsonl") for run in ("local", "ray"))
        assert local == remote and len(local) == 2 * (1 + 2 * 3)
        assert ((tmp_path / "local" / it / "kept.jsonl").read_text() == (tmp_path / "ray" / it / "kept.jsonl").read_text())
        # the workers sampled the self-edits too (records arrive in any order)
        local, remote = (sorted(records(tmp_path / run / "work" / it / "samples.jsonl"), key=lambda r: r["key"]) for run in ("local", "ray"))
        assert local == remote and len(local) == 2


def test_ray_trial_of_a_killed_worker_is_retried_not_lost_or_doubled(tiny_lm, tmp_path, ray_executor):
    import os
    import signal

    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.rl.rest_em import LocalExecutor, TrialJob

    cfg = cfg_for(tmp_path)
    domain = KnowledgeDomain(tiny_lm, cfg.format, cfg.sampling, cfg.inner)
    items = {p.id: p for p in domain.load_items(cfg.data, None)}
    jobs = [TrialJob(f"{pid}|passage|{r}", pid, "passage", r, 100 + r, None) for pid in items for r in range(4)]
    expected = {job.key: res for job, res in LocalExecutor().run(domain, items, jobs, {})}

    got, retries_before = [], ray_executor.retries
    for job, res in ray_executor.run(domain, items, jobs, {}):
        if not got:  # both workers hold a trial now: kill one mid-trial
            os.kill(ray_executor.worker_pids()[0], signal.SIGKILL)
        got.append((job.key, res))
    assert sorted(k for k, _ in got) == sorted(expected)  # every trial exactly once
    assert ray_executor.retries > retries_before
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}  # noqa: E731
    assert {k: strip(r) for k, r in got} == {k: strip(r) for k, r in expected.items()}


def toy_cfg(**kw):
    return RestEMConfig(**{"data": "toy:0", "n": 6, "iterations": 3, "k": 4, "repeats": 1, "exclude": [], **kw})


def test_the_outer_loop_runs_any_domain_without_a_model(tmp_path):
    """ReST-EM through the Domain contract alone: a model-free toy domain learns its targets."""
    from seal.domains.toy import ToyDomain

    stats = run_rest_em(ToyDomain(), toy_cfg(), tmp_path / "toy")
    means = [s["mean_reward"] for s in stats]
    assert means[-1] > means[0] + 0.05  # the generator moved towards each item's target
    assert all(s["passage_only_reward"] == 0.5 and s["base_reward"] == 0.0 for s in stats)  # the domain's baselines
    trials = records(tmp_path / "toy" / "work" / "iter_1" / "trials.jsonl")
    assert {t["sample"] for t in trials} == {"base", "none", 0, 1, 2, 3}
    samples = records(tmp_path / "toy" / "work" / "iter_2" / "samples.jsonl")
    assert all(s["generator_links"] == 1 for s in samples)  # the domain's context is stored with the samples
    manifest = json.loads((tmp_path / "toy" / "iter_3" / "generator.json").read_text())
    assert manifest == {"format": "toy", "vocab": 10, "iteration": 3, "chain": ["iter_1", "iter_2", "iter_3"]}
    again = run_rest_em(ToyDomain(), toy_cfg(), tmp_path / "toy")  # resumes: nothing left to do
    assert again == stats


def test_the_toy_domain_on_ray_gives_the_local_records(tmp_path, ray_executor):
    from seal.domains.toy import ToyDomain

    local = run_rest_em(ToyDomain(), toy_cfg(iterations=2), tmp_path / "local")
    remote = run_rest_em(ToyDomain(), toy_cfg(iterations=2), tmp_path / "ray", executor=ray_executor)
    strip = lambda s: {k: v for k, v in s.items() if not k.endswith("seconds")}  # noqa: E731
    assert [strip(s) for s in local] == [strip(s) for s in remote]
    for it in ("iter_1", "iter_2"):  # iteration 2 samples from the iter_1 table, shipped to the workers
        assert _comparable(tmp_path / "local" / "work" / it / "trials.jsonl") == _comparable(tmp_path / "ray" / "work" / it / "trials.jsonl")


def test_statistics_do_not_depend_on_the_order_trials_arrive_in():
    from seal.core.metrics import mean

    values = [1.0, 0.0, 0.3333333333333333, 1.0, 0.6666666666666666, 0.0, 1.0, 0.3333333333333333, 1.0]
    assert len({mean(values[i:] + values[:i]) for i in range(len(values))}) == 1
