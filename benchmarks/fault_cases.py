"""Crashes at chosen points of a commit window, and damaged stores (part of benchmarks/fault_injection.py).

Chosen-point crashes run `seal learn` and `seal bench continual` through benchmarks/crash_at.py,
which SIGKILLs the process at a named point (see its docstring). After each crash the next writer
must recover: every version committed before is still listed and loads, nothing that was under
versions/ is lost (a version may be moved to quarantine/, bytes intact, never deleted), and a
resumed `bench continual` holds each passage in exactly one version (read from the manifests'
documents) and each trial record once. Recovery and restore are killed in their own windows the same
way, and `seal learn` is run on a "full disk" (a file size limit): one line, head and versions unchanged.

Damage cases each start from a copy of one store with v1 and v2 (two tiny learns), damage it as a
file system, a backup restore or a received archive could, and run history, rollback, history, ask
and (when something is quarantined) restore. Every command must succeed or fail with a one-line
error within its timeout; every byte under versions/ before must still be in versions/ or
quarantine/; a file outside the store that a link points at must be unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from seal.core.run_records import read_trials
from seal.core.store import KnowledgeStore

HERE = Path(__file__).resolve().parent
FAST = ["--epochs", "2", "--lora-r", "4", "--lora-alpha", "8", "--max-new-tokens", "16"]
TIMEOUT = 180  # seconds for one command on the tiny model; more is counted as a hang


def seal(*args: str) -> list[str]:
    return [sys.executable, "-m", "seal.cli", *args]


def crash_at(point: str, *args: str) -> list[str]:
    return [sys.executable, str(HERE / "crash_at.py"), point, "--", *args]


@dataclass
class Ran:
    cmd: list[str]
    rc: int | None  # None: killed at the timeout (a hang)
    out: str
    err: str
    seconds: float


def run(cmd: list[str], env: dict, timeout: float = TIMEOUT, max_file_bytes: int | None = None) -> Ran:
    """Run `cmd` to its end or the timeout; `max_file_bytes`: a file size limit (RLIMIT_FSIZE), beyond
    which a write fails as on a full disk (Python ignores SIGXFSZ, so the write raises EFBIG)."""
    limit = None if max_file_bytes is None else lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, preexec_fn=limit)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, e.stdout or b"", e.stderr or b""
    text = lambda b: b.decode("utf-8", errors="replace")  # noqa: E731
    return Ran(cmd, rc, text(out), text(err), round(time.perf_counter() - t0, 1))


def outcome(r: Ran) -> str:
    """ok (exit 0), clean (exit 1 or 2 with a one-line `error:` last, or Typer's usage box for a bad
    option), hang, traceback (a Python traceback, or any other exit: a signal, an OOM kill)."""
    if r.rc is None:
        return "hang"
    if "Traceback (most recent call last)" in r.err:
        return "traceback"
    if r.rc == 0:
        return "ok"
    lines = [line for line in r.err.splitlines() if line.strip()]
    if r.rc in (1, 2) and lines and lines[-1].startswith("error:"):
        return "clean"
    if r.rc == 2 and any(m in r.err for m in ("Usage:", "Invalid value", "No such option", "Missing ")):
        return "clean"  # Typer's own box for an option it refuses while parsing
    return "traceback"


def describe(r: Ran) -> str:
    last = [line for line in r.err.splitlines() if line.strip()][-1:] or [""]
    return f"{' '.join(r.cmd[r.cmd.index('seal.cli') + 1:] if 'seal.cli' in r.cmd else r.cmd[2:])[:160]} -> rc {r.rc}: {last[0][:200]}"


# -- what a store holds ----------------------------------------------------------------------
def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def held(root: Path) -> set[tuple[str, str, str]]:
    """(version folder, file, sha256) of every file in versions/ and in quarantine/*/vNNNN/."""
    folders = [d for d in (root / "versions").glob("v*") if d.is_dir() and not d.is_symlink()]
    folders += [d for d in (root / "quarantine").glob("*/v*") if d.is_dir() and not d.is_symlink()]
    return {(d.name, str(p.relative_to(d)), sha(p)) for d in folders for p in d.rglob("*") if p.is_file() and not p.is_symlink()}


def lost(before: set, root: Path) -> list[str]:
    return sorted(f"{v}/{f}" for v, f, _ in before - held(root))


def listed(root: Path) -> set[int]:
    try:
        return set(json.loads((root / "state.json").read_text())["versions"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def check_store(root: Path, committed: set[int]) -> list[str]:
    """Problems a reader finds in the store (empty list: consistent, nothing committed lost)."""
    st = KnowledgeStore(root)
    problems = []
    try:
        state = json.loads((root / "state.json").read_text())
        versions = set(state["versions"])
        if state["head"] and state["head"] not in versions:
            problems.append(f"head v{state['head']} not listed")
        for v in sorted(versions):
            st.verify(v)
        if committed - versions:
            problems.append(f"lost versions {sorted(committed - versions)}")
        st.chain()
    except Exception as e:  # any failure to read is a finding, reported as such
        problems.append(f"{type(e).__name__}: {e}")
    return problems


def documents(root: Path) -> dict[str, list[str]]:
    """Passage id -> the version folders (in versions/ and quarantine/) whose manifest learned it."""
    out: dict[str, list[str]] = {}
    for m in [*(root / "versions").glob("v*/manifest.json"), *(root / "quarantine").glob("*/v*/manifest.json")]:
        for d in json.loads(m.read_text()).get("documents", []):
            out.setdefault(str(d.get("id")), []).append(str(m.parent.relative_to(root)))
    return out


def write_docs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for i in range(n):
        doc = folder / f"doc{i}.md"
        doc.write_text(f"# Ferry {i}\n\nIn March 2026 Volthaven supplied {i + 2} batteries for the ferry number {i}.\n")
        docs.append(doc)
    return docs


def make_template(model: Path, work: Path, env: dict) -> Path:
    """A store with v1 and v2, made by two tiny learns: every damage and learn crash starts from a copy."""
    store = work / "template"
    for doc in write_docs(work / "template-docs", 2):
        r = run(seal("learn", str(doc), "--store", str(store), "--model", str(model), *FAST, "--k", "1"), env)
        if r.rc != 0:
            raise SystemExit(f"making the template store failed: {describe(r)}\n{r.err[-2000:]}")
    return store


def fresh_copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


# -- chosen-point crashes --------------------------------------------------------------------
LEARN_POINTS = ["renamed", "state-unreplaced", "state-torn", "state-written"]
CONTINUAL_POINTS = ["renamed", "state-unreplaced", "state-written", "before-append", "torn-append"]


def learn_crashes(model: Path, template: Path, work: Path, env: dict, quick: bool = False) -> list[dict]:
    """`seal learn` into a copy of the template, killed at each point; then the next learn must recover."""
    docs = write_docs(work / "docs", 2)
    results = []
    for point in LEARN_POINTS[::2] if quick else LEARN_POINTS:
        store = fresh_copy(template, work / f"store-{point}")
        common = ["--store", str(store), "--model", str(model), *FAST, "--k", "1"]
        committed, before = listed(store), held(store)
        crash = run(crash_at(point, "learn", str(docs[0]), *common), env)
        after_crash = held(store)
        after = run(seal("learn", str(docs[1]), *common), env)  # the next writer recovers, then commits
        problems = [] if crash.rc == -9 else [f"not killed at {point}: {describe(crash)}"]
        problems += [] if after.rc == 0 else [f"next learn: {describe(after)}"]
        problems += check_store(store, committed) + [f"lost {f}" for f in lost(before | after_crash, store)]
        results.append({"case": f"learn killed at {point}", "injected": crash.rc == -9, "problems": problems,
                        "killed_version_kept": len(listed(store)) == len(committed) + 2,
                        "quarantined": [q["name"] for q in KnowledgeStore(store).quarantined()]})
    return results


def recovery_crashes(model: Path, template: Path, work: Path, env: dict) -> list[dict]:
    """Recovery and restore killed in their own windows: `seal rollback 1` killed right after it moved a
    damaged v2 into quarantine/ (before reason.json), and `seal restore` killed right after it renamed
    a repaired v2 back into versions/ (before state.json). The next learn must lose nothing."""
    doc = write_docs(work / "docs", 1)[0]
    results = []
    for case, point in [("rollback killed after quarantining a damaged version", "quarantined"),
                        ("restore killed after renaming the version back", "renamed")]:
        store = fresh_copy(template, work / f"store-{point}")
        adapter = store / V2 / "adapter_model.safetensors"
        _older_state(store)
        flip(adapter)
        before = held(store)
        if point == "renamed":  # quarantine v2, repair it there, then restore it
            run(seal("rollback", "1", "--store", str(store)), env)
            [q] = KnowledgeStore(store).quarantined()
            flip(Path(q["path"]) / adapter.name)
            before = held(store)
            crash = run(crash_at(point, "restore", q["name"], "--store", str(store)), env)
        else:
            crash = run(crash_at(point, "rollback", "1", "--store", str(store)), env)
        after_crash = held(store)
        after = run(seal("learn", str(doc), "--store", str(store), "--model", str(model), *FAST, "--k", "1"), env)
        hist = run(seal("history", "--store", str(store)), env)
        problems = [] if crash.rc == -9 else [f"not killed at {point}: {describe(crash)}"]
        problems += [f"{describe(r)}" for r in (after, hist) if r.rc != 0]
        problems += check_store(store, {1}) + [f"lost {f}" for f in lost(before | after_crash, store)]
        if point == "renamed" and 2 not in listed(store):
            problems.append("the restored v2 is not listed after the next writer")
        results.append({"case": case, "injected": crash.rc == -9, "problems": problems,
                        "quarantined": [q["name"] for q in KnowledgeStore(store).quarantined()]})
    return results


def write_failures(model: Path, template: Path, work: Path, env: dict) -> list[dict]:
    """`seal learn` whose writes fail as on a full disk (a file size limit of 0, 1 KB, 8 KB: the tiny
    model's adapter is about 20 KB). It must end with one line, leave the head and every version as
    they were, and the next learn (no limit) must commit."""
    doc = write_docs(work / "docs", 1)[0]
    results = []
    for limit in (0, 1024, 8192):
        store = fresh_copy(template, work / f"store-{limit}")
        common = ["--store", str(store), "--model", str(model), *FAST, "--k", "1"]
        state, before = (store / "state.json").read_text(), held(store)
        failed = run(seal("learn", str(doc), *common), env, max_file_bytes=limit)
        messy = [] if outcome(failed) == "clean" else [f"{outcome(failed)}: {describe(failed)}"]
        problems = [] if (store / "state.json").read_text() == state else ["state.json changed"]
        problems += check_store(store, listed(store)) + [f"lost {f}" for f in lost(before, store)]
        after = run(seal("learn", str(doc), *common), env)
        problems += [] if after.rc == 0 else [f"next learn: {describe(after)}"]
        results.append({"case": f"seal learn with writes failing beyond {limit} bytes", "injected": failed.rc != 0, "problems": problems,
                        "messy": messy, "error": describe(failed)})
    return results


def head_holds(root: Path, ids: list[str]) -> list[str]:
    """[] when the head's chain learned exactly these passages, in this order."""
    try:
        st = KnowledgeStore(root)
        chain = [str(d.get("id")) for v in st.chain() for d in st.manifest(v)["documents"]]
    except Exception as e:  # a store that cannot be read is reported, not raised
        return [f"head chain unreadable: {type(e).__name__}: {e}"]
    return [] if chain == ids else [f"head chain learned {chain}, not {ids}"]


def qa_items(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({
        "id": f"p{i}", "title": f"Town {i}", "context": f"In 2026 the town {i} ferry got batteries from Volthaven {i}.",
        "questions": [{"question": f"Who supplied the batteries of the town {i} ferry?", "answer": f"Volthaven {i}"}]}) + "\n"
        for i in range(n)))
    return path


def continual_crashes(model: Path, work: Path, env: dict, quick: bool = False) -> list[dict]:
    """`seal bench continual` (2 passages, stack) killed at each point of its second edit, then resumed."""
    data = qa_items(work / "items.jsonl", 2)
    results = []
    for point in CONTINUAL_POINTS[::2] if quick else CONTINUAL_POINTS:
        out = work / f"run-{point}"
        cmd = ["bench", "continual", "--data", str(data), "--n", "2", "--strategy", "stack", "--model", str(model),
               "--epochs", "2", "--out", str(out)]
        crash = run(crash_at(f"{point}@2", *cmd), env)
        store = out / "stores" / "stack" / "seq0"
        after_crash = held(store)
        resumed = run(seal(*cmd), env)
        problems = [] if crash.rc == -9 else [f"not killed at {point}@2: {describe(crash)}"]
        problems += [] if resumed.rc == 0 else [f"resume: {describe(resumed)}"]
        keys = [r["key"] for r in read_trials(out / "trials.jsonl")[0]]
        if sorted(keys) != ["base", "stack|0|0", "stack|0|1"]:
            problems.append(f"trial keys {keys}")
        learned = documents(store)
        if sorted(learned) != ["p0", "p1"] or any(len(v) != 1 for v in learned.values()):
            problems.append(f"passages learned (id -> versions): {learned}")
        problems += check_store(store, set()) + [f"lost {f}" for f in lost(after_crash, store)] + head_holds(store, ["p0", "p1"])
        records = {r["key"]: r for r in read_trials(out / "trials.jsonl")[0]}
        results.append({"case": f"bench continual killed at {point} of edit 2", "injected": crash.rc == -9, "problems": problems,
                        "resumed_without_relearning": bool(records.get("stack|0|1", {}).get("resumed"))})
    return results


# -- damaged stores --------------------------------------------------------------------------
def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _huge_parent(path: Path) -> None:
    """A manifest whose parent has 5001 digits (more than Python's int() parses by default)."""
    path.write_text(json.dumps({**json.loads(path.read_text()), "parent": "HUGE"}).replace('"HUGE"', "1" * 5001))


def _older_state(s: Path) -> None:
    (s / "state.json").write_text('{"head": 1, "versions": [1]}')


def _move_out(link: Path, outside: Path) -> None:
    """Replace `link` by a symbolic link to a copy of it outside the store (as an archive may carry)."""
    target = outside / link.name
    shutil.move(link, target)
    link.symlink_to(target, target_is_directory=target.is_dir())


def _leftovers(s: Path) -> None:
    (s / "tmp" / "version-x").mkdir(parents=True)
    (s / "tmp" / "version-x" / "adapter_model.safetensors").write_bytes(b"half")
    (s / ".state.json.123.tmp").write_text('{"head": 2, "vers')


V2 = "versions/v0002"
DAMAGES = {  # name -> damage(store, outside folder); outside/victim.txt is a file no command may change
    "older state.json + flipped v2 adapter byte": lambda s, o: (_older_state(s), flip(s / V2 / "adapter_model.safetensors")),
    "missing state.json + garbage v2 manifest": lambda s, o: ((s / "state.json").unlink(), (s / V2 / "manifest.json").write_text("x")),
    "older state.json + missing v2 adapter_config.json": lambda s, o: (_older_state(s), (s / V2 / "adapter_config.json").unlink()),
    "missing state.json + missing v2 adapter_config.json": lambda s, o: ((s / "state.json").unlink(), (s / V2 / "adapter_config.json").unlink()),
    "older state.json + edited version field of v2": lambda s, o: (_older_state(s), edit_json(s / V2 / "manifest.json", version=7)),
    ".lock symlinked to a victim file outside": lambda s, o: (s / ".lock").unlink(missing_ok=True) or (s / ".lock").symlink_to(o / "victim.txt"),
    ".lock hard-linked to a victim file outside": lambda s, o: (s / ".lock").unlink(missing_ok=True) or os.link(o / "victim.txt", s / ".lock"),
    "manifest parent cycle (v1's parent is v2)": lambda s, o: edit_json(s / "versions/v0001/manifest.json", parent=2),
    "duplicate state.json entries": lambda s, o: (s / "state.json").write_text('{"head": 2, "versions": [1, 2, 2, 1]}'),
    "listed head v2 with a flipped adapter byte": lambda s, o: flip(s / V2 / "adapter_model.safetensors"),
    "listed v2 with a 5001-digit parent": lambda s, o: _huge_parent(s / V2 / "manifest.json"),
    "garbage store.json": lambda s, o: (s / "store.json").write_text("{"),
    "state.json symlinked to a file outside": lambda s, o: _move_out(s / "state.json", o),
    "versions/ symlinked to a folder outside": lambda s, o: _move_out(s / "versions", o),
    "v2 folder symlinked to a folder outside": lambda s, o: _move_out(s / V2, o),
    "leftovers of a killed writer (tmp/, torn .state.json tmp)": lambda s, o: _leftovers(s),
}


DAMAGED_HEAD = {"manifest parent cycle (v1's parent is v2)", "listed head v2 with a flipped adapter byte",
                "listed v2 with a 5001-digit parent", "v2 folder symlinked to a folder outside", "versions/ symlinked to a folder outside"}


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def damage_case(name: str, model: Path, template: Path, work: Path, env: dict) -> dict:
    store, outside = fresh_copy(template, work / "store"), work / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious: no seal command may write here\n")
    DAMAGES[name](store, outside)
    before, outside_before = held(store), tree(outside)
    ask = ["ask", "Who supplied the batteries?", "--model", str(model)]
    runs = [run(seal(*args, "--store", str(store)), env) for args in (["history"], ask, ["rollback", "1"], ["history", "--json"], ask)]
    names = [q["name"] for q in KnowledgeStore(store).quarantined()] if not (store / "quarantine").is_symlink() else []
    runs += [run(seal("restore", q, "--store", str(store)), env) for q in names]  # refused while still damaged: one line
    said = "".join(r.out + r.err for r in runs)
    messy = [f"{outcome(r)}: {describe(r)}" for r in runs if outcome(r) not in ("ok", "clean")]
    problems = [f"lost {f}" for f in lost(before, store)]
    problems += [] if tree(outside) == outside_before else ["a file outside the store changed"]
    problems += [f"quarantined {q} without naming it" for q in names if q not in said]
    problems += ["ask answered from a damaged head"] if name in DAMAGED_HEAD and outcome(runs[1]) != "clean" else []
    try:
        versions = json.loads((store / "state.json").read_text())["versions"]
        problems += [] if len(versions) == len(set(versions)) else [f"state.json still lists {versions}"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a store the commands refused (a linked folder) keeps what it had
    return {"case": name, "injected": True, "problems": problems, "messy": messy, "quarantined": names,
            "outcomes": [outcome(r) for r in runs]}


def damage_cases(model: Path, template: Path, work: Path, env: dict, quick: bool = False) -> list[dict]:
    results = []
    for i, name in enumerate(list(DAMAGES)[::2] if quick else DAMAGES):
        (work / str(i)).mkdir()
        results.append(damage_case(name, model, template, work / str(i), env))
    return results
