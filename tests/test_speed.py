"""`seal bench speed` on the tiny model: phases timed per learn, ratios to the reference, resumable."""

import json

from test_continual import tiny_continual

from seal.bench.speed import MACHINE, PHASES, run_speed, write_speed
from seal.core.run_records import read_trials


def test_speed_bench_times_each_phase_of_each_learn_beside_the_reference(tiny_lm, tmp_path):
    cfg = tiny_continual(tmp_path, n=2, sequences=1, strategies=["stack", "stack:epochs=3:stop-recalled=on"])
    out = tmp_path / "run"
    results = run_speed(cfg, out, lm=tiny_lm)
    for name in ("speed.json", "speed.md", "speed.png", "report.md", "results.json"):
        assert (out / name).stat().st_size > 0, name
    machine = results["machine"]
    assert machine["matmul_gflops"] > 0 and machine["threads"] >= 1
    assert machine["model_params"] == sum(p.numel() for p in {id(p): p for p in tiny_lm.model.parameters()}.values())
    ref, fast = results["recipes"]["stack"], results["recipes"]["stack:epochs=3:stop-recalled=on"]
    assert ref["vs_reference"]["wall"] == 1.0 and fast["vs_reference"]["wall"] > 0
    for row in ref["rows"] + fast["rows"]:
        assert all(row[p] is not None and row[p] >= 0 for p in PHASES)
        # the phases are measured inside the learn, so together they never exceed its wall time
        assert sum(row[p] for p in PHASES) <= row["wall_seconds"] + 0.05
        assert row["input_tokens"] > 0 and row["gflop"] == round(4 * machine["model_params"] * row["input_tokens"] / 1e9, 1)
    assert [r["epochs_run"] for r in ref["rows"]] == [1, 1]
    assert all(1 <= r["epochs_run"] <= 3 for r in fast["rows"])
    assert "| `stack` |" in (out / "speed.md").read_text()

    # resumed: nothing runs again, the machine is measured once, and the report is rebuilt from the records alone
    again = run_speed(cfg, out, lm=tiny_lm)
    records = read_trials(out / "trials.jsonl")[0]
    assert sum(r.get("key") == MACHINE for r in records) == 1
    assert again["recipes"]["stack"]["rows"] == ref["rows"]
    assert write_speed(out, cfg, records) == json.loads((out / "speed.json").read_text())


def test_a_speed_run_killed_after_its_first_learn_still_reports(tiny_lm, tmp_path, monkeypatch):
    import seal.bench.continual as continual
    from seal.bench.knowledge import report_run

    cfg = tiny_continual(tmp_path, n=2, sequences=1, strategies=["stack"])
    out = tmp_path / "run"
    real, calls = continual.learn, []

    def killed_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(continual, "learn", killed_on_second)
    try:
        run_speed(cfg, out, lm=tiny_lm)
    except KeyboardInterrupt:
        pass
    records = read_trials(out / "trials.jsonl")[0]
    assert [r["key"] for r in records][:2] == ["base", MACHINE] and len(records) == 3  # base, machine, one learn
    report_run(out)
    speed = json.loads((out / "speed.json").read_text())
    assert len(speed["recipes"]["stack"]["rows"]) == 1
