"""Run a `seal` command and SIGKILL it at a named point of a commit window, with no hook in seal itself.

    python benchmarks/crash_at.py POINT[@N] -- learn doc.md --store S ...
    python benchmarks/crash_at.py renamed@2 -- bench continual --out R ...

The functions at that point are wrapped from outside (as seal.core.store and seal.core.run_records
see them) and the process kills itself with SIGKILL the N-th time (default 1) the point is reached,
exactly as a power cut or the OOM killer would: no `finally`, no flush. A run that never reaches the
point completes normally, with its own exit status. Points:

    renamed           a version folder was renamed into versions/ (by a commit or a restore); state.json not yet written
    state-unreplaced  inside a commit's write_json_atomic of state.json: the new file fully written beside it, not yet renamed over it
    state-torn        inside a commit's write_json_atomic of state.json: half of the new file written beside it
    state-written     a commit wrote state.json: the version is committed, the command has not returned
    quarantined       recovery renamed a damaged version into quarantine/, before its reason.json is written
    before-append     an edit's record of `seal bench continual` is about to be appended to trials.jsonl (the edit committed and measured)
    torn-append       half of that record's line written to trials.jsonl
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

POINTS = ("renamed", "state-unreplaced", "state-torn", "state-written", "quarantined", "before-append", "torn-append")


def arm(point: str, nth: int) -> None:
    """Wrap the functions around `point` so that its nth occurrence kills this process."""
    import seal.core.run_records as run_records
    import seal.core.store as store

    seen = [0]
    in_commit = [False]

    def due() -> bool:
        """Whether this occurrence of the point is the one to crash at."""
        seen[0] += 1
        return seen[0] == nth

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    real_commit, real_write, real_rename, real_replace = store.KnowledgeStore.commit, store.write_json_atomic, os.rename, os.replace
    real_append = run_records.TrialLog.append

    def commit(self, *args, **kwargs):
        in_commit[0] = True
        try:
            return real_commit(self, *args, **kwargs)
        finally:
            in_commit[0] = False

    def rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        parent = Path(dst).parent
        if ((point == "renamed" and parent.name == "versions") or (point == "quarantined" and parent.parent.name == "quarantine")) and due():
            die()

    def write_json_atomic(path, obj):
        if not (in_commit[0] and Path(path).name == "state.json"):
            return real_write(path, obj)
        if point == "state-torn" and due():
            text = store.json_text(obj, indent=2)
            tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text[: len(text) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()
        if point == "state-unreplaced" and due():
            os.replace = lambda *a, **k: die()
        try:
            real_write(path, obj)
        finally:
            os.replace = real_replace
        if point == "state-written" and due():
            die()

    def append(self, record):
        if "step" in record and point == "torn-append" and due():
            line = run_records.json_text(record) + "\n"
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()
        if "step" in record and point == "before-append" and due():
            die()
        return real_append(self, record)

    store.KnowledgeStore.commit = commit
    store.write_json_atomic = write_json_atomic
    os.rename = rename
    run_records.TrialLog.append = append


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    point, _, nth = sys.argv[1].partition("@")
    if point not in POINTS:
        raise SystemExit(f"unknown point {point!r}; points: {', '.join(POINTS)}")
    arm(point, int(nth or 1))
    from seal.cli import main as seal_main

    sys.argv = ["seal", *sys.argv[3:]]
    sys.exit(seal_main())


if __name__ == "__main__":
    main()
