"""Run folders and their records, shared by every benchmark and by ReST-EM.

A run folder holds `config.json` (the resolved config, with a `seal_run` marker naming the kind of
run) and append-only, fsynced JSONL records, so a killed run resumes where it stopped. Seal only
ever deletes or overwrites what it wrote itself: a folder is reused only when it is empty or when
its config.json carries the marker (or, for runs written before the marker, parses as that kind's
config), and `--fresh` removes only the entries the run kind writes, never other files.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from seal.core.config import as_json
from seal.core.environment import ENVIRONMENTS, add_environment, config_differences
from seal.core.runtime import UsageError, json_text

MARKER = "seal_run"


def read_trials(path: Path) -> tuple[list[dict], int]:
    """The records of a JSONL log (never written to) and its number of lines. A line that is not a
    record (torn by a kill mid-write, or garbage) is skipped with a one-line warning on stderr that
    names it: the trial it held, if any, simply runs again, and every other record is kept."""
    if not path.exists():
        return [], 0
    lines = path.read_bytes().splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line.decode("utf-8"))
            if not (isinstance(record, dict) and isinstance(record.get("key"), str)):
                raise ValueError("not a JSON object with a key")
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if line.strip():
                print(f"warning: {path} line {n} is not a record ({' '.join(str(e).split())[:120]}); skipped",
                      file=sys.stderr)
            continue
        records.append(record)
    return records, len(lines)


class TrialLog:
    """Append-only JSONL of finished records, keyed by their `key`."""

    def __init__(self, path: Path):
        self.path = path
        self.records, n_lines = read_trials(path)
        if len(self.records) < n_lines:
            self._rewrite()
        self.done = {r["key"] for r in self.records}

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json_text(r) + "\n" for r in self.records), encoding="utf-8")
        os.replace(tmp, self.path)

    def append(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json_text(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self.done.add(record["key"])


def run_kind(out: Path) -> str | None:
    """The kind of run a folder holds, from its config.json marker (None: none readable). Runs
    written before the marker say it in a kind-specific key (continual runs: "benchmark")."""
    try:
        conf = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(conf, dict):
        return None
    return conf.get(MARKER) or ("bench-continual" if conf.get("benchmark") == "continual" else None)


def read_config(out: Path, kind: str, check: Callable[[dict], object], what: str) -> dict:
    """config.json of a run folder of this kind without its marker, or a one-line error naming what is wrong."""
    path = out / "config.json"
    if not path.is_file():
        raise UsageError(f"{out} is not a {what} run folder (no config.json)")
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(conf, dict):
            raise TypeError("not a JSON object")
        if conf.get(MARKER, kind) != kind:
            raise TypeError(f"it is a {conf[MARKER]} run")
        conf.pop(MARKER, None)
        check(conf)
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise UsageError(f"{path}: not a {what} config this version can read ({e})") from None
    return conf


def prepare_run_dir(out: Path, kind: str, conf: dict, fresh: bool, written: tuple[str, ...],
                    check: Callable[[dict], object], what: str, env: dict | None = None) -> None:
    """Make `out` ready for a run of `kind` with config `conf`: create it, resume it (same config),
    or with `fresh` clear what an earlier run of this kind wrote (`written`: the names or glob
    patterns of what it creates).
    `env` (library versions, threads, device) is appended to the folder's list of environments: a
    resume on another environment is not a config mismatch.

    Refused with one line, before anything is written: a folder that exists, is not empty and is not
    a run of this kind (seal never deletes nor overwrites files it did not write), or a run of this
    kind with another config (without `fresh`)."""
    previous = None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        if "config.json" not in entries:
            raise UsageError(f"{out} is not empty and is not a {what} run folder (no config.json); "
                             "seal will not write into it: choose a new or empty --out")
        old = read_config(out, kind, check, what)
        if fresh:
            for name in entries:
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in written):
                    target = out / name
                    shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        else:
            parsed = check({k: v for k, v in old.items() if k != ENVIRONMENTS})
            if dataclasses.is_dataclass(parsed):  # a field added since (with its default) is no mismatch
                old = {**as_json(parsed), **({ENVIRONMENTS: old[ENVIRONMENTS]} if ENVIRONMENTS in old else {})}
            diff = config_differences(old, conf)
            if diff:
                raise UsageError(f"{out} holds a {what} run with a different config ({', '.join(diff)} differ); "
                                 "use --fresh to start it over or another --out")
            previous = old
    marked = {MARKER: kind, **(add_environment(conf, env, previous) if env is not None else conf)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json_text(marked, indent=2) + "\n", encoding="utf-8")


def merge_sources(out: Path, sources: list[Path], read: Callable[[Path], dict]) -> tuple[list[dict], list[dict]]:
    """The configs (`read` from each source, environments removed) of runs to merge into `out`, and
    their environments; one-line errors for no source or `out` among them."""
    if not sources:
        raise UsageError("nothing to merge: name at least one run folder")
    if out.resolve() in {s.resolve() for s in sources}:
        raise UsageError(f"{out} is one of the sources; merge into a new folder")
    confs = [read(s) for s in sources]
    envs = [e for c in confs for e in c.get(ENVIRONMENTS, [])]  # not a setting: listed, never compared
    return [{k: v for k, v in c.items() if k != ENVIRONMENTS} for c in confs], envs


def write_merged(out: Path, sources: list[Path], kind: str, conf: dict, envs: list[dict]) -> list[dict]:
    """Write the run folder `out` merged from `sources`: config.json (`conf`, marked as `kind`, with the
    sources' environments listed once each) and trials.jsonl with every record of the sources, one per
    key, from the first source that has it. Returns the records. `out` must be new or empty."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} is not empty; merge into a new folder")
    records, seen = [], set()
    for src in sources:
        for r in read_trials(src / "trials.jsonl")[0]:
            if r["key"] not in seen:
                seen.add(r["key"])
                records.append(r)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.jsonl").write_text("".join(json_text(r) + "\n" for r in records), encoding="utf-8")
    conf = {MARKER: kind, **conf, ENVIRONMENTS: [e for i, e in enumerate(envs) if e not in envs[:i]]}
    (out / "config.json").write_text(json_text(conf, indent=2) + "\n", encoding="utf-8")
    return records
