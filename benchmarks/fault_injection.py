"""Faults and bad inputs against seal, on a tiny random model: does anything get lost, or crash?

    python benchmarks/fault_injection.py --quick --out runs/faults             # ~5 min on 2 free cores
    python benchmarks/fault_injection.py --kills 10 --out runs/faults          # ~15 min
    python benchmarks/fault_injection.py --kills 10 --model PATH --out DIR     # any local model

Faults (each must be survived with nothing lost):
- random kills: `seal learn`, `seal bench knowledge` and `seal bench continual` each started --kills
  times in a fresh process and SIGKILLed after a delay drawn uniformly over 1.1x the time a complete
  run took; `seal learn` also interrupted by Ctrl-C (SIGINT) --kills/4 times, which must end with its
  one `interrupted` line. After every round a reader checks the store: state.json valid, every listed
  version matches its checksums, every version committed before still listed, nothing that was under
  versions/ gone (quarantine/ counts as kept). Run folders: no trial key twice, no passage learned
  twice, and a final uninterrupted run completes each folder with the answers of an uninterrupted run
  (knowledge) or with each passage in exactly one version, in order, on the head's chain (continual).
- chosen-point crashes (fault_cases.py, through crash_at.py, which patches seal from outside and
  SIGKILLs itself at a named point): `seal learn` after the version's rename, inside and after the
  state.json write; `seal bench continual`'s second edit at the same points and before or halfway
  through its trial record; recovery after it quarantined a version, restore after its rename; and
  `seal learn` on a "full disk" (a file size limit). The next writer must recover and lose nothing.
- damaged stores (fault_cases.py): each on a copy of one store with v1 and v2; the commands run on
  it must succeed or fail in one line, within a timeout, and keep every byte and any outside file.

Bad inputs (bad_inputs.py): a table of bad command-line invocations, each classified as clean error,
ok, traceback, silent, refused, late or hang (see there).

--quick: 1 random kill per command, every other chosen point and damage case, every third bad
input. --parts picks parts: kills, crashes (chosen points and the full disk), damage, inputs. Prints
the counts (faults injected / survived with nothing lost / ended messily, i.e. with a traceback, a
hang or no one-line error, by kind; bad inputs by outcome) with every failing case named, and writes
them with every case's details to OUT/faults.json.
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
from typing import Callable

from bad_inputs import bad_inputs
from fault_cases import (FAST, check_store, continual_crashes, damage_cases, documents, head_holds, held, learn_crashes, listed, lost,
                         make_template, qa_items, recovery_crashes, seal, write_docs, write_failures)
from seal.core.run_records import read_trials
from seal.core.store import KnowledgeStore


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_tiny_model  # the same 2-layer model as the fast test tier

    return build_tiny_model(folder)


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


def run_interrupted(cmd: list[str], delay: float, env: dict) -> tuple[bool, int, str, str]:
    """Run `cmd`, press Ctrl-C (SIGINT) after `delay` seconds: (interrupted, exit status, stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=delay)
        interrupted = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        interrupted = True
    return interrupted, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"a complete run failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def store_faults(model: Path, work: Path, kills: int, rng: random.Random, env: dict) -> tuple[list[dict], dict]:
    """`seal learn` killed at random moments, one after another on one store. After each kill a reader
    checks the store (without recovering it); the next learn recovers what the kill left."""
    docs = write_docs(work / "docs", kills + 2)
    store = work / "store"
    common = ["--store", str(store), "--model", str(model), *FAST, "--k", "1"]
    full = timed(seal("learn", str(docs[0]), *common), env)
    committed, cases, info = {1}, [], {"finished_before_kill": 0, "committed_by_killed_runs": 0}
    for i in range(kills):
        before, was_held, delay = listed(store), held(store), rng.uniform(0, full * 1.1)
        killed = run_killed(seal("learn", str(docs[i + 1]), *common), delay, env)
        info["finished_before_kill"] += not killed
        info["committed_by_killed_runs"] += killed and bool(listed(store) - before)
        problems = check_store(store, committed) + [f"lost {f}" for f in lost(was_held, store)]
        committed |= listed(store)
        cases.append({"case": f"seal learn killed after {delay:.1f} s", "injected": killed, "problems": problems})
    was_held = held(store)
    timed(seal("learn", str(docs[-1]), *common), env)  # the next writer recovers and commits
    tmp_left = (store / "tmp").is_dir() and any((store / "tmp").iterdir())
    cases.append({"case": "seal learn after the kills", "injected": False, "problems": check_store(store, committed)
                  + [f"lost {f}" for f in lost(was_held, store)] + (["tmp/ not emptied"] if tmp_left else [])})
    info.update(seconds_per_full_run=round(full, 1), versions_at_end=len(listed(store)))
    return cases, info


def interrupt_faults(model: Path, work: Path, rounds: int, rng: random.Random, env: dict) -> tuple[list[dict], dict]:
    """`seal learn` interrupted by Ctrl-C at random moments, start-up included: it must end with its one
    line (`interrupted`, status 130), never a traceback, and leave the store as a kill would at worst.
    Pressed after the command ended (its result printed), it ends the exiting process silently (-2)."""
    docs = write_docs(work / "docs", rounds + 1)
    store = work / "store"
    common = ["--store", str(store), "--model", str(model), *FAST, "--k", "1"]
    full = timed(seal("learn", str(docs[0]), *common), env)
    cases = []
    for i in range(rounds):
        committed, was_held, delay = listed(store), held(store), rng.uniform(0, full)
        interrupted, rc, out, err = run_interrupted(seal("learn", str(docs[i + 1]), *common), delay, env)
        problems = check_store(store, committed) + [f"lost {f}" for f in lost(was_held, store)]
        lines = [line for line in err.splitlines() if line.strip()]
        ended = rc == -signal.SIGINT and "learned version" in out and "Traceback" not in err
        messy = []
        if interrupted and rc != 0 and not ended and (rc != 130 or "Traceback" in err or lines[-1:] != ["interrupted"]):
            messy.append(f"exit {rc}, last lines {lines[-3:]}" + (" after a traceback" if "Traceback" in err else ""))
        cases.append({"case": f"seal learn interrupted after {delay:.1f} s", "injected": interrupted, "problems": problems, "messy": messy})
    return cases, {"seconds_per_full_run": round(full, 1)}


def killed_runs(cmd: list[str], work: Path, kills: int, rng: random.Random, env: dict, name: str,
                check: Callable[[Path, list[str], set[str]], list[str]]) -> tuple[list[dict], list[Path], set[str], float]:
    """A benchmark command run once whole (work/whole), then killed `kills` times at random moments
    within about that run's time, each kill in the current folder (a folder that completes gives way
    to a new one, where the next kills land), then run once more to the end. After each kill: trial
    keys written twice, and whatever `check(folder, keys, expected keys)` finds. Returns the kill
    cases, the folders, the keys of the whole run and its seconds."""
    full = timed([*cmd, "--out", str(work / "whole")], env)
    expected = {r["key"] for r in read_trials(work / "whole" / "trials.jsonl")[0]}
    cases, folders = [], [work / "run1"]
    for _ in range(kills):
        delay = rng.uniform(0, full * 1.1)
        killed = run_killed([*cmd, "--out", str(folders[-1])], delay, env)
        keys = [r["key"] for r in read_trials(folders[-1] / "trials.jsonl")[0]]
        problems = [f"duplicate trial keys {sorted(k for k in set(keys) if keys.count(k) > 1)}"] if len(keys) != len(set(keys)) else []
        problems += check(folders[-1], keys, expected)
        cases.append({"case": f"{name} killed after {delay:.1f} s", "injected": killed, "problems": problems})
        if set(keys) == expected:  # this folder is complete: the next kills land in a new run
            folders.append(work / f"run{len(folders) + 1}")
    timed([*cmd, "--out", str(folders[-1])], env)
    return cases, folders, expected, full


def bench_faults(model: Path, work: Path, kills: int, rng: random.Random, env: dict) -> tuple[list[dict], dict]:
    """`seal bench knowledge` killed at random moments and resumed; a run folder that completes is
    compared with an uninterrupted run, and the next kills go to a new folder."""
    data = qa_items(work / "items.jsonl", 4)
    cmd = seal("bench", "knowledge", "--data", str(data), "--conditions", "base,passage", "--repeats", "2", "--model", str(model),
               "--epochs", "2", "--lora-r", "4", "--lora-alpha", "8", "--canary-sample", "0")
    cases, folders, expected, full = killed_runs(
        cmd, work, kills, rng, env, "seal bench knowledge",
        lambda folder, keys, expected: [f"unknown trial keys {sorted(set(keys) - expected)}"] if set(keys) - expected else [])
    whole = {r["key"]: r.get("per_question") for r in read_trials(work / "whole" / "trials.jsonl")[0]}
    problems = []
    for folder in folders:
        records = read_trials(folder / "trials.jsonl")[0]
        keys = [r["key"] for r in records]
        if set(keys) != expected or len(keys) != len(set(keys)):
            problems.append(f"{folder.name} incomplete or duplicated after one more run")
        if {r["key"]: r.get("per_question") for r in records} != whole:
            problems.append(f"{folder.name} answers differ from an uninterrupted run")
    cases.append({"case": "seal bench knowledge resumed after the kills", "injected": False, "problems": problems})
    return cases, {"seconds_per_full_run": round(full, 1), "trials_per_run": len(expected), "run_folders": len(folders)}


def continual_faults(model: Path, work: Path, kills: int, rng: random.Random, env: dict) -> tuple[list[dict], dict]:
    """`seal bench continual` (3 passages, stack) killed at random moments and resumed: no trial record
    twice, no passage learned twice; a folder that completes holds each passage in one version."""
    data = qa_items(work / "items.jsonl", 3)
    cmd = seal("bench", "continual", "--data", str(data), "--n", "3", "--strategy", "stack", "--model", str(model), "--epochs", "2")

    def learned_twice(folder: Path, _keys, _expected) -> list[str]:
        twice = {p: v for p, v in documents(folder / "stores" / "stack" / "seq0").items() if len(v) > 1}
        return [f"passages learned twice: {twice}"] if twice else []

    cases, folders, expected, full = killed_runs(cmd, work, kills, rng, env, "seal bench continual", learned_twice)
    problems = []
    for folder in folders:
        keys = [r["key"] for r in read_trials(folder / "trials.jsonl")[0]]
        store = folder / "stores" / "stack" / "seq0"
        learned = documents(store)
        if set(keys) != expected or len(keys) != len(set(keys)):
            problems.append(f"{folder.name}: trial keys {keys}")
        if sorted(learned) != ["p0", "p1", "p2"] or any(len(v) != 1 for v in learned.values()):
            problems.append(f"{folder.name}: passages learned {learned}")
        problems += [f"{folder.name}: {p}" for p in head_holds(store, ["p0", "p1", "p2"])]
    cases.append({"case": "seal bench continual resumed after the kills", "injected": False, "problems": problems})
    return cases, {"seconds_per_full_run": round(full, 1), "run_folders": len(folders)}


def tally(sections: dict[str, list[dict]]) -> dict:
    """Faults injected, survived with nothing lost (no problem: nothing lost, store and run folders
    consistent, no wrong answer) and ended messily (a traceback, a hang, an exit without its one
    line), by kind; and every case that found either."""
    by_kind = {kind: {"injected": sum(c["injected"] for c in cases),
                      "survived_nothing_lost": sum(c["injected"] and not c["problems"] for c in cases),
                      "messy_endings": sum(bool(c.get("messy")) for c in cases)}
               for kind, cases in sections.items()}
    return {**{key: sum(k[key] for k in by_kind.values()) for key in ("injected", "survived_nothing_lost", "messy_endings")},
            "by_kind": by_kind,
            "failing": [{"kind": kind, **c} for kind, cases in sections.items() for c in cases if c["problems"] or c.get("messy")]}


PARTS = ("kills", "crashes", "damage", "inputs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="random SIGKILLs per command (learn, bench knowledge, bench continual)")
    ap.add_argument("--quick", action="store_true", help="1 random kill per command, every other chosen point and damage, every third bad input")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} [default: all]")
    ap.add_argument("--model", type=Path, help="a local model folder [default: a tiny random model built here]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="where to write faults.json [default: only print]")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        ap.error(f"--parts: unknown {', '.join(sorted(parts - set(PARTS)))}")
    kills, quick = (1 if args.quick else args.kills), args.quick
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    sections, info, seconds, inputs = {}, {}, {}, None
    with tempfile.TemporaryDirectory(prefix="seal-faults-") as tmp:
        work = Path(tmp)
        env["SEAL_CACHE"] = str(work / "cache")
        model = args.model or tiny_model(work / "model")
        template = make_template(model, work, env)
        plan = {  # kind -> (part, folder, what runs it); each returns its cases, or (cases, info)
            "random kills: seal learn": ("kills", "learn", lambda w: store_faults(model, w, kills, rng, env)),
            "random kills: seal bench knowledge": ("kills", "knowledge", lambda w: bench_faults(model, w, kills, rng, env)),
            "random kills: seal bench continual": ("kills", "continual", lambda w: continual_faults(model, w, kills, rng, env)),
            "Ctrl-C at random moments: seal learn": ("kills", "interrupt", lambda w: interrupt_faults(model, w, max(1, kills // 4), rng, env)),
            "chosen-point crashes: seal learn": ("crashes", "crash-learn", lambda w: learn_crashes(model, template, w, env, quick)),
            "chosen-point crashes: seal bench continual": ("crashes", "crash-continual", lambda w: continual_crashes(model, w, env, quick)),
            "chosen-point crashes: recovery and restore": ("crashes", "crash-recovery", lambda w: recovery_crashes(model, template, w, env)),
            "failing writes (disk full): seal learn": ("crashes", "disk-full", lambda w: write_failures(model, template, w, env)),
            "damaged stores": ("damage", "damage", lambda w: damage_cases(model, template, w, env, quick)),
        }
        for kind, (part, folder, fn) in plan.items():
            if part in parts:
                (work / folder).mkdir()
                t0 = time.perf_counter()
                got = fn(work / folder)
                sections[kind], info[kind] = got if isinstance(got, tuple) else (got, {})
                seconds[kind] = round(time.perf_counter() - t0)
        if "inputs" in parts:
            (work / "inputs").mkdir()
            t0 = time.perf_counter()
            inputs = bad_inputs(model, template, work / "inputs", env, quick)
            seconds["bad inputs"] = round(time.perf_counter() - t0)
    result = {"seed": args.seed, "random_kills_per_command": kills if "kills" in parts else 0,
              "minutes": round((time.perf_counter() - started) / 60, 1), "seconds": seconds, "faults": tally(sections),
              "bad_inputs": inputs, "random_kills": {k: v for k, v in info.items() if v}, "cases": sections}
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "faults.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
