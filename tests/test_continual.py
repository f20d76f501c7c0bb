"""Continual learning: strategies in seal learn, the general probe, and seal bench continual (tiny model)."""

import json

import pytest
from conftest import run_seal

from seal.core.config import InnerLoopConfig, LearnConfig, SamplingConfig
from seal.bench.continual import ContinualConfig, edit_key, merge_runs, parse_strategy, run_continual, store_dir
from seal.bench.continual_report import matrix, sequence_metrics
from seal.domains.knowledge.data import Passage, Question
from seal.guard.general import copies_document, general_summary, is_correct, load_general
from seal.core.inner_loop import Rehearsal, TrainExample, lora_adapter, train
from seal.learn import chain_examples, learn
from seal.core.runtime import SealError, UsageError
from seal.core.store import KnowledgeStore


def tiny_learn(**kw) -> LearnConfig:
    base = dict(sampling=SamplingConfig(k=0), inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-3))
    return LearnConfig(**{**base, **kw})


def passages(n=3):
    return [Passage(f"p{i}", f"Town {i}", f"Volthaven {i} supplied the ferry batteries of town {i} in March.",
                    [Question(f"Who supplied the batteries of town {i}?", f"Volthaven {i}")]) for i in range(n)]


# -- the general probe ----------------------------------------------------------------------------

def test_general_questions_are_well_formed_and_graded_with_any_accepted_answer():
    qs = load_general()
    assert len(qs) >= 60 and len({q.id for q in qs}) == len(qs) and all(q.answers for q in qs)
    paris = next(q for q in qs if q.question == "What is the capital of France?")
    assert is_correct(paris, "The capital of France is Paris.")
    assert not is_correct(paris, "It is 214 million kroner.")


def test_kept_counts_only_what_the_golden_copy_knew_and_copies_are_caught():
    qs = load_general()[:3]
    base = [{"id": qs[0].id, "prediction": "right", "correct": True},
            {"id": qs[1].id, "prediction": "right", "correct": True},
            {"id": qs[2].id, "prediction": "wrong", "correct": False}]
    doc = "The heat pump cost 214 million kroner and was built in Bergen by Volthaven."
    now = [{"id": qs[0].id, "prediction": "right", "correct": True},
           {"id": qs[1].id, "prediction": "It cost 214 million kroner and was built.", "correct": False},
           {"id": qs[2].id, "prediction": "x", "correct": True}]
    s = general_summary(now, base, [doc], qs)
    assert s["n_base_correct"] == 2 and s["kept"] == 0.5 and s["copies"] == 1 and s["copied_ids"] == [qs[1].id]
    assert s["lost"] == {qs[1].id: "It cost 214 million kroner and was built."}
    assert not copies_document("Paris is the capital of France.", [doc])


# -- strategies in seal learn ---------------------------------------------------------------------

def test_stop_loss_ends_training_after_the_first_epoch_below_it(tiny_lm):
    exs = [TrainExample("Volthaven supplied the ferry batteries.")]
    cfg = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=6, lr=5e-2, stop_loss=1e9)
    with lora_adapter(tiny_lm.model, cfg, 0) as m:
        assert train(m, tiny_lm.tokenizer, exs, cfg, 0).epochs == 1
    cfg.stop_loss = None
    with lora_adapter(tiny_lm.model, cfg, 0) as m:
        assert train(m, tiny_lm.tokenizer, exs, cfg, 0).epochs == 6


def test_stop_loss_watches_the_new_examples_not_the_rehearsed_ones(tiny_lm):
    # Rehearsed examples of weight 0 add steps of loss 0: the epoch's mean loss falls, what the
    # new example recalls does not, and it alone decides when to stop.
    exs = [TrainExample("Volthaven supplied the ferry batteries.")]
    pool = Rehearsal([TrainExample(f"Filler sentence number {i}.") for i in range(8)], 8, weight=0.0)
    cfg = InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=3, lr=1e-4)
    with lora_adapter(tiny_lm.model, cfg, 0) as m:
        r = train(m, tiny_lm.tokenizer, exs, cfg, 0, rehearsal=(pool,))
    assert r.epochs == 3 and len(r.new_losses) == 3
    assert r.new_losses[0] == pytest.approx(sum(r.losses[:9]))  # the 8 rehearsed steps add 0
    cfg.stop_loss = min(r.new_losses) / 2
    assert sum(r.losses[:9]) / 9 < cfg.stop_loss  # the mean of all 9 steps would have stopped after epoch 1
    with lora_adapter(tiny_lm.model, cfg, 0) as m:
        assert train(m, tiny_lm.tokenizer, exs, cfg, 0, rehearsal=(pool,)).epochs == 3


@pytest.mark.parametrize("strategy", ["stack", "replay", "consolidate"])
def test_each_strategy_learns_a_chain(tiny_lm, tmp_path, strategy):
    store = KnowledgeStore(tmp_path / "store")
    ps = passages(3)
    for p in ps:
        learn(tiny_lm, store, [p], tiny_learn(strategy=strategy, replay=1))
    chain = store.chain()
    if strategy == "consolidate":
        assert chain == [3] and store.manifest(3)["consolidates"] == [2]
        assert store.manifest(3)["parent"] == 0
    else:
        assert chain == [1, 2, 3]
    # whatever the strategy, the head's chain remembers every passage it was taught, once
    taught = [e.completion for e in chain_examples(store)]
    assert taught == [f"{p.title}\n{p.context}" for p in ps]
    m = store.manifest(3)
    assert m["strategy"] == strategy and m["training_examples"] == [{"completion": f"Town 2\n{ps[2].context}", "prompt": ""}]
    if strategy == "replay":
        assert m["rehearsal"]["replay"] == {"pool": 2, "per_epoch": 1}
        assert m["rehearsal"]["anchors"]["per_epoch"] == 16  # the default recipe rehearses anchors too
    if strategy == "consolidate":
        assert len(m["inherited_examples"]) == 2


def test_bad_strategy_and_writer_are_one_line_errors(tiny_lm, tmp_path):
    with pytest.raises(SealError, match="unknown strategy 'merge'"):
        learn(tiny_lm, KnowledgeStore(tmp_path / "s"), passages(1), tiny_learn(strategy="merge"))
    with pytest.raises(SealError, match="unknown self-edit writer"):
        learn(tiny_lm, KnowledgeStore(tmp_path / "s"), passages(1), tiny_learn(writer="teacher"))


def test_unknown_target_modules_are_refused_before_the_store_is_written(tiny_lm, tmp_path):
    cfg = tiny_learn(inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, target_modules=("q_proj", "nosuch")))
    with pytest.raises(UsageError, match=r"target modules nosuch not found in the model \(its linear layers: .*q_proj"):
        learn(tiny_lm, KnowledgeStore(tmp_path / "s"), passages(1), cfg)
    assert not (tmp_path / "s").exists()


def test_strategy_specs_parse_into_learn_configs():
    cfg = parse_strategy("replay:lr=1e-3:stop-loss=0.1:writer=base:replay=8:anchors=4:guard=off:mix=on", LearnConfig())
    assert (cfg.strategy, cfg.inner.lr, cfg.inner.stop_loss, cfg.writer, cfg.replay) == ("replay", 1e-3, 0.1, "base", 8)
    assert cfg.inner.mix_rehearsal and not LearnConfig().inner.mix_rehearsal
    assert cfg.anchors == 4 and not cfg.guard.enabled and LearnConfig().guard.enabled
    assert LearnConfig().inner.lr == 1e-3  # the base recipe is not changed in place
    for bad, msg in (("stak", "unknown strategy"), ("stack:lr=x", "lr cannot be"), ("stack:guard=maybe", "guard cannot be"), ("stack:mix=yes", "mix cannot be"), ("stack:foo=1", "bad option"),
                     ("stack:lr=-1", "positive finite"), ("stack:writer=me", "unknown self-edit writer")):
        with pytest.raises(SealError, match=msg):
            parse_strategy(bad, LearnConfig())


# -- the benchmark ----------------------------------------------------------------------------------

def test_matrix_bookkeeping():
    recs = [
        {"step": 0, "order": ["b", "a"], "row": {"b": 1.0}},
        {"step": 1, "order": ["b", "a"], "row": {"b": 0.5, "a": 0.75}},
    ]
    a = matrix(recs, 2)
    assert a == [[1.0, None], [0.5, 0.75]]
    m = sequence_metrics(a)
    assert m["just_learned"] == 0.875 and m["final"] == 0.625 and m["bwt"] == -0.5
    assert m["retention"] == pytest.approx(0.625 / 0.875)
    partial = sequence_metrics(matrix(recs[:1], 2))
    assert partial["final"] is None and partial["just_learned"] == 1.0 and not partial["complete"]


def tiny_continual(tmp_path, **kw) -> ContinualConfig:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": p.id, "title": p.title, "context": p.context,
                                        "questions": [{"question": q.question, "answer": q.answer} for q in p.questions]}) + "\n"
                            for p in passages(3)))
    base = dict(data=str(data), n=3, sequences=2, strategies=["stack", "consolidate:epochs=2"], learn=tiny_learn())
    return ContinualConfig(**{**base, **kw})


def test_continual_bench_writes_every_artefact_and_resumes_after_a_kill(tiny_lm, tmp_path):
    cfg = tiny_continual(tmp_path)
    out = tmp_path / "run"
    results = run_continual(cfg, out, lm=tiny_lm)
    for name in ("config.json", "trials.jsonl", "results.json", "report.md", "plot.png",
                 "heatmap_stack.png", "heatmap_consolidate_epochs=2.png"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records][0] == "base" and len(records) == 1 + 2 * 2 * 3
    assert records[1]["order"] == ["p0", "p1", "p2"] and sorted(records[4]["order"]) == ["p0", "p1", "p2"]
    for r in records[1:]:
        assert list(r["row"]) == r["order"][: r["step"] + 1]  # the lower triangle, one row per edit
        assert r["general"]["n_questions"] == len(load_general()) and "margin" in r["canary"]
        assert r["general"]["n_base_correct"] == records[0]["general"]["n_base_correct"]
    s = results["strategies"]["stack"]
    assert s["n_edits"] == 6 and len(s["matrix"]) == 3 and s["matrix"][0][1] is None
    assert {"just_learned", "final", "retention", "bwt", "general_kept_final", "canary_final", "perplexity_final",
            "seconds_per_edit", "peak_rss_mb"} <= set(s)
    assert results["strategies"]["consolidate:epochs=2"]["epochs_run"] == 2
    assert "| stack | 6 |" in (out / "report.md").read_text()

    # A kill after the last version was committed but before its record was written, and a torn line.
    path = out / "trials.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30])
    again = run_continual(cfg, out, lm=tiny_lm)
    redone = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["key"] for r in redone] == [r["key"] for r in records]
    assert redone[-1]["resumed"] and redone[-1]["version"] == records[-1]["version"]
    assert redone[-1]["row"] == records[-1]["row"]  # measured on the same committed head
    assert len(KnowledgeStore(store_dir(out, "consolidate:epochs=2", 1)).state()["versions"]) == 3
    assert again["strategies"]["stack"] == results["strategies"]["stack"]


def test_a_run_grows_by_strategy_or_ordering_but_other_changes_need_fresh(tiny_lm, tmp_path):
    out = tmp_path / "run"
    run_continual(tiny_continual(tmp_path, n=2, sequences=1, strategies=["stack"]), out, lm=tiny_lm)
    base = (out / "trials.jsonl").read_text().splitlines()[0]
    results = run_continual(tiny_continual(tmp_path, n=2, sequences=2, strategies=["replay"]), out, lm=tiny_lm)
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert records[0] == json.loads(base) and sum(r["key"] == "base" for r in records) == 1  # measured once
    assert [r["key"] for r in records[1:]] == ["stack|0|0", "stack|0|1", "replay|0|0", "replay|0|1", "replay|1|0", "replay|1|1"]
    assert list(results["strategies"]) == ["stack", "replay"] and results["config"]["sequences"] == 2
    assert json.loads((out / "config.json").read_text())["strategies"] == ["stack", "replay"]
    # a folder written before a setting existed (here mix_rehearsal) grows too: the setting is at its default
    conf = json.loads((out / "config.json").read_text())
    del conf["learn"]["inner"]["mix_rehearsal"]
    (out / "config.json").write_text(json.dumps(conf))
    run_continual(tiny_continual(tmp_path, n=2, sequences=1, strategies=["stack:mix=on"]), out, lm=tiny_lm)
    assert json.loads((out / "config.json").read_text())["strategies"] == ["stack", "replay", "stack:mix=on"]
    with pytest.raises(SealError, match="different config"):
        run_continual(tiny_continual(tmp_path, n=1, sequences=1, strategies=["stack"]), out, lm=tiny_lm)
    with pytest.raises(SealError, match="fewer than --n"):
        run_continual(tiny_continual(tmp_path, n=5), tmp_path / "run2", lm=tiny_lm)
    with pytest.raises(SealError, match="listed twice"):
        run_continual(tiny_continual(tmp_path, strategies=["stack", "stack"]), tmp_path / "run3", lm=tiny_lm)
    assert edit_key("stack", 0, 2) == "stack|0|2"


def test_orderings_split_over_processes_merge_into_the_run_of_one_command(tiny_lm, tmp_path):
    whole = run_continual(tiny_continual(tmp_path, n=2, sequences=2, strategies=["stack", "replay"]), tmp_path / "w", lm=tiny_lm)
    # one process per ordering of stack, one for replay's two: the split a machine with three cores would run
    run_continual(tiny_continual(tmp_path, n=2, sequences=2, strategies=["stack"]), tmp_path / "s1", lm=tiny_lm, only=[1])
    part = run_continual(tiny_continual(tmp_path, n=2, sequences=2, strategies=["stack"]), tmp_path / "s0", lm=tiny_lm, only=[0])
    assert list(part["strategies"]["stack"]["sequences"]) == ["0"]  # only the ordering asked for ran
    run_continual(tiny_continual(tmp_path, n=2, sequences=2, strategies=["replay"]), tmp_path / "r", lm=tiny_lm)
    merged = merge_runs(tmp_path / "m", [tmp_path / "s0", tmp_path / "s1", tmp_path / "r"])
    assert merged["config"] == whole["config"]
    keys = [json.loads(line)["key"] for line in (tmp_path / "m" / "trials.jsonl").read_text().splitlines()]
    assert keys == ["base", "stack|0|0", "stack|0|1", "stack|1|0", "stack|1|1", "replay|0|0", "replay|0|1", "replay|1|0", "replay|1|1"]
    for name in ("stack", "replay"):  # the same learns: an edit's seed does not depend on which process ran it
        for stat in ("just_learned", "final", "retention", "matrix", "general_kept_final", "perplexity_final"):
            assert merged["strategies"][name][stat] == whole["strategies"][name][stat], (name, stat)
    # the merged folder is that command's run folder: resuming it has nothing left to learn
    again = run_continual(tiny_continual(tmp_path, n=2, sequences=2, strategies=["stack", "replay"]), tmp_path / "m", lm=tiny_lm)
    assert again["strategies"]["stack"]["matrix"] == whole["strategies"]["stack"]["matrix"]
    assert not (tmp_path / "m" / "stores").exists()
    r = run_seal("bench", "merge", "--out", str(tmp_path / "m1"), str(tmp_path / "s1"), str(tmp_path / "s0"),
                 env={"COLUMNS": "200"}, timeout=300)
    assert r.returncode == 0 and "continual learning, 2 passages x 2 ordering(s)" in r.stdout, r.stderr
    assert json.loads((tmp_path / "m1" / "config.json").read_text())["strategies"] == ["stack"]
    with pytest.raises(SealError, match="not empty"):
        merge_runs(tmp_path / "m", [tmp_path / "s0"])
    with pytest.raises(SealError, match="one of the sources"):
        merge_runs(tmp_path / "s0", [tmp_path / "s0", tmp_path / "s1"])
    run_continual(tiny_continual(tmp_path, n=1, sequences=1, strategies=["stack"]), tmp_path / "n1", lm=tiny_lm)
    with pytest.raises(SealError, match="differ in n"):
        merge_runs(tmp_path / "m2", [tmp_path / "s0", tmp_path / "n1"])
    with pytest.raises(SealError, match="--only-sequence must name orderings from 0 to 1"):
        run_continual(tiny_continual(tmp_path, n=2, sequences=2), tmp_path / "x", lm=tiny_lm, only=[2])


def test_alone_learns_each_later_passage_into_a_fresh_store_and_joins_a_finished_run(tiny_lm, tmp_path):
    out = tmp_path / "run"
    run_continual(tiny_continual(tmp_path, n=3, sequences=1, strategies=["stack"]), out, lm=tiny_lm)
    # asked later on the same folder: only the passages' own learns run; the ordering's first
    # edit was already that passage learned into an empty store, so it is reused
    results = run_continual(tiny_continual(tmp_path, n=3, sequences=1, strategies=["stack"], alone=True), out, lm=tiny_lm)
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    alone = {r["passage_id"]: r for r in records if r.get("alone")}
    assert [r["key"] for r in records if r.get("alone")] == ["alone|stack|p0", "alone|stack|p1", "alone|stack|p2"]
    assert alone["p0"]["from"] == "stack|0|0" and alone["p0"]["accuracy"] == records[1]["row"]["p0"]
    for pid in ("p1", "p2"):  # learned alone: a one-version store of that passage
        store = KnowledgeStore(out / "stores" / "stack" / "alone" / pid)
        assert len(store.state()["versions"]) == 1 and store.manifest(1)["documents"][0]["id"] == pid
        assert 0 <= alone[pid]["accuracy"] <= 1 and alone[pid]["epochs_run"] == 1
    s = results["strategies"]["stack"]
    assert s["n_edits"] == 3 and s["alone_by_passage"] == {p: r["accuracy"] for p, r in alone.items()}
    later = [(r["row"][r["passage_id"]], alone[r["passage_id"]]["accuracy"]) for r in records[2:4]]
    assert s["later_edits"] == 2 and s["later_minus_alone"] == pytest.approx(sum(j - a for j, a in later) / 2)
    assert "alone %" in (out / "report.md").read_text() and json.loads((out / "config.json").read_text())["alone"]
    # a kill after p2's alone version was committed, before its record: measured, not relearned
    path = out / "trials.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-1]))
    run_continual(tiny_continual(tmp_path, n=3, sequences=1, strategies=["stack"], alone=True), out, lm=tiny_lm)
    assert len(KnowledgeStore(out / "stores" / "stack" / "alone" / "p2").state()["versions"]) == 1
    assert json.loads(path.read_text().splitlines()[-1])["accuracy"] == alone["p2"]["accuracy"]


def test_the_golden_copy_writes_the_same_self_edits_whatever_the_head_has_learned(tiny_lm, tmp_path):
    cfg = tiny_learn(writer="base", sampling=SamplingConfig(k=1, max_new_tokens=8),
                     inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=2, lr=5e-2))
    ps = passages(2)
    chained = KnowledgeStore(tmp_path / "chained")
    learn(tiny_lm, chained, [ps[0]], cfg)
    learn(tiny_lm, chained, [ps[1]], cfg)
    alone = KnowledgeStore(tmp_path / "alone")
    learn(tiny_lm, alone, [ps[1]], cfg)
    written = [e["text"] for e in chained.manifest(2)["self_edits"]]
    assert written and written == [e["text"] for e in alone.manifest(1)["self_edits"]]


def test_a_strategy_naming_a_module_the_model_lacks_is_refused_before_the_run_folder(tiny_lm, tmp_path):
    cfg = tiny_continual(tmp_path, n=1, sequences=1, strategies=["stack:modules=nosuch"])
    with pytest.raises(SealError, match="nosuch"):
        run_continual(cfg, tmp_path / "run", lm=tiny_lm)
    assert not (tmp_path / "run").exists()
