"""Kill `seal learn` and `seal bench knowledge` at random moments, then check that nothing was lost.

    python benchmarks/fault_injection.py --kills 20 --out runs/faults          # a tiny random model, ~5 min
    python benchmarks/fault_injection.py --kills 10 --model PATH --out DIR     # any local model

Each round starts the command in a fresh process and SIGKILLs it after a random delay drawn
uniformly over the time a complete run of it took. After every kill, a reader checks the store:
state.json is valid, every listed version's files match their checksums, and every version committed
before is still there. The benchmark's run folder is checked the same way: trials.jsonl has no
duplicate keys and a final uninterrupted run completes it. Prints one JSON object of counts and
writes it to OUT/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seal.core.run_records import read_trials
from seal.core.store import KnowledgeStore

FAST = ["--epochs", "2", "--lora-r", "4", "--lora-alpha", "8", "--max-new-tokens", "16"]


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_tiny_model  # the same 2-layer model as the fast test tier

    return build_tiny_model(folder)


def seal(*args: str) -> list[str]:
    return [sys.executable, "-m", "seal.cli", *args]


def run_killed(cmd: list[str], delay: float, env: dict) -> bool:
    """Run `cmd`, SIGKILL it after `delay` seconds; True if it was killed (not finished before)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"a complete run failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def check_store(root: Path, committed: set[int]) -> list[str]:
    """Problems a reader finds in the store (empty list: consistent, nothing lost)."""
    st = KnowledgeStore(root)
    problems = []
    try:
        state = json.loads((root / "state.json").read_text())
        listed = set(state["versions"])
        if state["head"] and state["head"] not in listed:
            problems.append(f"head v{state['head']} not listed")
        for v in sorted(listed):
            st.verify(v)
        if committed - listed:
            problems.append(f"lost versions {sorted(committed - listed)}")
        st.chain()
    except Exception as e:  # any failure to read is a finding, reported as such
        problems.append(f"{type(e).__name__}: {e}")
    return problems


def store_faults(model: Path, work: Path, kills: int, rng: random.Random, env: dict) -> dict:
    store = work / "store"
    docs = []
    for i in range(kills + 2):
        doc = work / f"doc{i}.md"
        doc.write_text(f"# Ferry {i}\n\nIn March 2026 Volthaven supplied {i + 2} batteries for the ferry number {i}.\n")
        docs.append(doc)
    common = ["--store", str(store), "--model", str(model), *FAST, "--k", "1"]
    full = timed(seal("learn", str(docs[0]), *common), env)
    committed = {1}
    counts = {"kills": 0, "finished_before_kill": 0, "committed_by_killed_runs": 0, "inconsistent": 0, "problems": []}
    for i in range(kills):
        before = set(json.loads((store / "state.json").read_text())["versions"])
        killed = run_killed(seal("learn", str(docs[i + 1]), *common), rng.uniform(0, full * 1.1), env)
        counts["kills" if killed else "finished_before_kill"] += 1
        after = set(json.loads((store / "state.json").read_text())["versions"])
        if killed and after - before:
            counts["committed_by_killed_runs"] += 1
        problems = check_store(store, committed)
        committed |= after
        if problems:
            counts["inconsistent"] += 1
            counts["problems"] += problems
    timed(seal("learn", str(docs[-1]), *common), env)  # the next writer recovers and commits
    final = KnowledgeStore(store)
    counts.update(seconds_per_full_run=round(full, 1), versions_at_end=len(final.state()["versions"]),
                  final_problems=check_store(store, committed), tmp_left=(store / "tmp").is_dir() and any((store / "tmp").iterdir()))
    return counts


def bench_faults(model: Path, work: Path, kills: int, rng: random.Random, env: dict) -> dict:
    data = work / "items.jsonl"
    data.write_text("".join(json.dumps({
        "id": f"p{i}", "title": f"Town {i}", "context": f"In 2026 the town {i} ferry got batteries from Volthaven {i}.",
        "questions": [{"question": f"Who supplied the batteries of the town {i} ferry?", "answer": f"Volthaven {i}"}]}) + "\n"
        for i in range(4)))
    cmd = seal("bench", "knowledge", "--data", str(data), "--conditions", "base,passage", "--repeats", "2", "--model", str(model),
               "--epochs", "2", "--lora-r", "4", "--lora-alpha", "8", "--canary-sample", "0")
    full = timed([*cmd, "--out", str(work / "whole")], env)
    expected = {r["key"] for r in read_trials(work / "whole" / "trials.jsonl")[0]}
    counts = {"kills": 0, "finished_before_kill": 0, "duplicate_keys": 0, "unknown_keys": 0, "run_folders": 1}
    run = work / "run1"
    for _ in range(kills):
        killed = run_killed([*cmd, "--out", str(run)], rng.uniform(0, full * 1.1), env)
        counts["kills" if killed else "finished_before_kill"] += 1
        keys = [r["key"] for r in read_trials(run / "trials.jsonl")[0]]
        counts["duplicate_keys"] += len(keys) - len(set(keys))
        counts["unknown_keys"] += len(set(keys) - expected)
        if set(keys) == expected:  # this folder is complete: the next kills land in a new run
            counts["run_folders"] += 1
            run = work / f"run{counts['run_folders']}"
    timed([*cmd, "--out", str(run)], env)
    whole = {r["key"]: r.get("per_question") for r in read_trials(work / "whole" / "trials.jsonl")[0]}
    complete, same = True, True
    for i in range(1, counts["run_folders"] + 1):
        records = read_trials(work / f"run{i}" / "trials.jsonl")[0]
        keys = [r["key"] for r in records]
        complete &= set(keys) == expected and len(keys) == len(set(keys))
        same &= {r["key"]: r.get("per_question") for r in records} == whole
    counts.update(seconds_per_full_run=round(full, 1), trials_per_run=len(expected), complete=complete,
                  same_answers_as_uninterrupted=same)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per command")
    ap.add_argument("--model", type=Path, help="a local model folder [default: a tiny random model built here]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="where to write faults.json [default: only print]")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory(prefix="seal-faults-") as tmp:
        work = Path(tmp)
        env["SEAL_CACHE"] = str(work / "cache")
        model = args.model or tiny_model(work / "model")
        (work / "learn").mkdir()
        (work / "bench").mkdir()
        result = {"kills_per_command": args.kills, "seed": args.seed,
                  "learn": store_faults(model, work / "learn", args.kills, rng, env),
                  "bench": bench_faults(model, work / "bench", args.kills, rng, env)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "faults.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
