"""The knowledge store: a golden copy of the base model and a versioned sandbox of adapters.

Layout of a store folder:

    store.json            base model identity (name, path, sha256 of its weights); written once
    state.json            the commit point: {"head": N, "versions": [1, 2, ...]}
    versions/v0001/       adapter_config.json, adapter_model.safetensors, manifest.json
    tmp/                  versions being written; anything here is garbage after a crash
    .lock                 flock held by the one process that may write

The base weights are never written. The head is the base model plus the deltas of the versions
on the parent chain of `head`, applied in order. A version becomes real only when `state.json`
(replaced atomically) lists it, so a writer killed at any moment leaves the previous head.
Rollback moves `head`; later versions stay on disk and can be made head again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .runtime import SealError, fsync_dir, fsync_tree, write_json_atomic

FORMAT_VERSION = 1


def default_store_dir() -> Path:
    env = os.environ.get("SEAL_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("seal")) / "store"


def version_name(v: int) -> str:
    return f"v{v:04d}"


class KnowledgeStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / "store.json").is_file()

    def info(self) -> dict:
        return json.loads((self.root / "store.json").read_text()) if self.exists else {}

    def state(self) -> dict:
        path = self.root / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {"head": 0, "versions": []}

    @property
    def head(self) -> int:
        return self.state()["head"]

    def manifest(self, v: int) -> dict:
        return json.loads((self.root / "versions" / version_name(v) / "manifest.json").read_text())

    def manifests(self) -> list[dict]:
        return [self.manifest(v) for v in self.state()["versions"]]

    def chain(self, v: int | None = None) -> list[int]:
        """Versions whose deltas make up version v (default: the head), oldest first."""
        v = self.head if v is None else v
        known = set(self.state()["versions"])
        if v != 0 and v not in known:
            raise SealError(f"no version {v} in store {self.root} (versions: {sorted(known) or 'none'})")
        out = []
        while v:
            out.append(v)
            v = self.manifest(v)["parent"]
        return out[::-1]

    def adapter_dirs(self, v: int | None = None) -> list[Path]:
        return [self.root / "versions" / version_name(x) for x in self.chain(v)]

    def check_base(self, name: str, checksum: str) -> None:
        """Refuse to mix a store with a model other than the base it was created for."""
        base = self.info().get("base")
        if base and base["sha256"] != checksum:
            raise SealError(
                f"store {self.root} belongs to base model {base['name']} ({base['sha256'][:12]}), "
                f"not {name} ({checksum[:12]}); pass --store for another store"
            )

    # -- writing (only under lock) ---------------------------------------------------------
    @contextmanager
    def lock(self, wait_seconds: float = 0.0) -> Iterator["KnowledgeStore"]:
        """Exclusive writer lock; fails with a clear message if another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                        raise SealError(
                            f"store {self.root} is busy: another seal process (pid {holder}) is writing to it; "
                            "try again when it finishes"
                        ) from None
                    time.sleep(0.5)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._recover()
            yield self
        finally:
            os.close(fd)  # closing releases the flock

    def _recover(self) -> None:
        """Drop what a killed writer left behind: temp folders and uncommitted version folders."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        for torn in self.root.glob(".*.json.*.tmp"):  # from write_json_atomic
            torn.unlink(missing_ok=True)
        committed = {version_name(v) for v in self.state()["versions"]}
        versions = self.root / "versions"
        if versions.is_dir():
            for d in versions.iterdir():
                if d.name not in committed:
                    shutil.rmtree(d, ignore_errors=True)

    def init(self, name: str, path: Path, checksum: str) -> None:
        if self.exists:
            self.check_base(name, checksum)
            return
        info = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base": {"name": name, "path": str(path), "sha256": checksum},
        }
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / "state.json", {"head": 0, "versions": []})
        write_json_atomic(self.root / "store.json", info)

    def new_version_dir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="version-", dir=tmp))

    def commit(self, folder: Path, manifest: dict, parent: int | None = None) -> int:
        """Move a fully written version folder into place and make it the head, atomically.

        The new version's parent is the head unless `parent` says otherwise (0: a version trained
        from the golden base alone, e.g. a consolidation of the head's chain)."""
        state = self.state()
        v = max(state["versions"], default=0) + 1
        manifest = {**manifest, "version": v, "parent": state["head"] if parent is None else parent}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        fsync_tree(folder)
        dest = self.root / "versions" / version_name(v)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, dest)
        fsync_dir(dest.parent)
        write_json_atomic(self.root / "state.json", {"head": v, "versions": state["versions"] + [v]})
        return v

    def rollback(self, v: int) -> None:
        state = self.state()
        if v != 0 and v not in state["versions"]:
            raise SealError(f"no version {v} in store {self.root} (versions: {state['versions'] or 'none'})")
        write_json_atomic(self.root / "state.json", {**state, "head": v})
