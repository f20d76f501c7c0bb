"""The knowledge store: a golden copy of the base model and a versioned sandbox of adapters.

Layout of a store folder:

    store.json            base model identity (name, path, sha256 of its weights); written once
    state.json            the commit point: {"head": N, "versions": [1, 2, ...]}
    versions/v0001/       adapter_config.json, adapter_model.safetensors, manifest.json
    tmp/                  versions being written; anything here is garbage after a crash
    .lock                 the lock held by the one process that may write

The base weights are never written. The head is the base model plus the deltas of the versions
on the parent chain of `head`, applied in order. A version becomes head only when `state.json`
(replaced atomically) says so, so a writer killed at any moment leaves the previous head.
Rollback moves `head`; later versions stay on disk and can be made head again.

Nothing complete is ever deleted. Each manifest holds the sha256 of its version's files, checked
whenever the version is loaded (a damaged adapter is named in a one-line error, never used). A
version folder that is complete but missing from `state.json` (a writer killed between the rename
and the commit, or an older `state.json` restored from a backup) is adopted back into the list,
without moving the head; a missing or unreadable `state.json` (or `store.json`) is rebuilt from the
version folders, the damaged file kept beside it. Only folders that never became complete
(no readable manifest, files missing or not matching their checksums, never listed) are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from seal.core.runtime import RuntimeFailure, UsageError, fsync_dir, fsync_tree, json_text, sha256_file, write_json_atomic

FORMAT_VERSION = 1
LEGACY_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what every version folder holds


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
        self.notes: list[str] = []  # what recovery did, for the CLI to print as warnings
        self._rebuilt: dict | None = None

    # -- reading ---------------------------------------------------------------------------
    def _version_dirs(self) -> dict[int, Path]:
        versions = self.root / "versions"
        out = {}
        if versions.is_dir():
            for d in versions.iterdir():
                if d.is_dir() and len(d.name) == 5 and d.name[0] == "v" and d.name[1:].isdigit():
                    out[int(d.name[1:])] = d
        return dict(sorted(out.items()))

    @property
    def exists(self) -> bool:
        return (self.root / "store.json").is_file() or (self.root / "state.json").is_file() or bool(self._version_dirs())

    def _read(self, name: str) -> dict | None:
        """A top-level JSON file, or None when it is missing or unreadable (then rebuilt)."""
        path = self.root / name
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def info(self) -> dict:
        info = self._read("store.json")
        if info is not None and isinstance(info.get("base"), dict) and "sha256" in info["base"]:
            return info
        if not self.exists:
            return {}
        shas = {m.get("base_sha256") for m in self._complete_manifests().values()} - {None}
        if len(shas) > 1:
            raise RuntimeFailure(f"store {self.root}: store.json is missing or damaged and its versions name "
                                 f"{len(shas)} different base models; restore store.json from a backup")
        sha = shas.pop() if shas else None
        return {"format_version": FORMAT_VERSION, "rebuilt": True, "base": {"name": "unknown (rebuilt)", "path": "", "sha256": sha}}

    def state(self) -> dict:
        state = self._read("state.json")
        if _valid_state(state):
            return state
        if self._rebuilt is None:
            self._rebuilt = self._rebuild_state()
            if self._rebuilt["versions"]:
                self.notes.append(f"state.json is missing or damaged: read from the version folders (head v{self._rebuilt['head']}, "
                                  "the latest); the next `seal learn` or `seal rollback` writes it again")
        return self._rebuilt

    @property
    def head(self) -> int:
        return self.state()["head"]

    def manifest(self, v: int) -> dict:
        path = self.root / "versions" / version_name(v) / "manifest.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RuntimeFailure(f"store {self.root}: version {v} is damaged: {path} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RuntimeFailure(f"store {self.root}: version {v} is damaged: {path} is not valid JSON ({e})") from None

    def manifests(self) -> list[dict]:
        return [self.manifest(v) for v in self.state()["versions"]]

    def chain(self, v: int | None = None) -> list[int]:
        """Versions whose deltas make up version v (default: the head), oldest first."""
        v = self.head if v is None else v
        known = set(self.state()["versions"])
        if v != 0 and v not in known:
            raise UsageError(f"no version {v} in store {self.root} (versions: {sorted(known) or 'none'})")
        out = []
        while v:
            out.append(v)
            v = self.manifest(v)["parent"]
        return out[::-1]

    def verify(self, v: int) -> Path:
        """The folder of version v after checking its files against the manifest's checksums."""
        folder = self.root / "versions" / version_name(v)
        problem = _check_files(folder, self.manifest(v))
        if problem:
            raise RuntimeFailure(
                f"store {self.root}: version {v} is damaged ({problem}); it is not used. "
                f"Make an earlier version head with `seal rollback N` (see `seal history`)"
            )
        return folder

    def adapter_dirs(self, v: int | None = None) -> list[Path]:
        """The verified adapter folders that make up version v (default: the head), oldest first."""
        return [self.verify(x) for x in self.chain(v)]

    def check_base(self, name: str, checksum: str) -> None:
        """Refuse to mix a store with a model other than the base it was created for."""
        base = self.info().get("base")
        if base and base.get("sha256") and base["sha256"] != checksum:
            raise UsageError(
                f"store {self.root} belongs to base model {base['name']} ({base['sha256'][:12]}), "
                f"not {name} ({checksum[:12]}); pass --store for another store"
            )

    # -- recovery --------------------------------------------------------------------------
    def _complete_manifests(self) -> dict[int, dict]:
        """Manifests of the version folders that hold a complete version, checksums verified."""
        out = {}
        for v, folder in self._version_dirs().items():
            m = _complete_manifest(v, folder)
            if m is not None:
                out[v] = m
        return out

    def _rebuild_state(self) -> dict:
        """The state a missing or damaged state.json stood for: every complete version whose chain
        is complete, the latest of them that the guard did not reject as head."""
        versions: list[int] = []
        rejected: set[int] = set()
        for v, m in self._complete_manifests().items():
            if m["parent"] == 0 or m["parent"] in versions:
                versions.append(v)
                if (m.get("guard") or {}).get("decision") == "rejected":
                    rejected.add(v)
        return {"head": max(set(versions) - rejected, default=0), "versions": versions}

    # -- writing (only under lock) ---------------------------------------------------------
    @contextmanager
    def lock(self, wait_seconds: float = 0.0) -> Iterator["KnowledgeStore"]:
        """Exclusive writer lock; fails with a clear message if another process holds it."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"store {self.root} is a file, not a folder; pass --store FOLDER")
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_seconds
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                    raise RuntimeFailure(
                        f"store {self.root} is busy: another seal process (pid {holder}) is writing to it; "
                        "try again when it finishes"
                    )
                time.sleep(0.5)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, str(os.getpid()).encode())
            self._recover()
            yield self
        finally:
            os.close(fd)  # closing releases the lock

    def _recover(self) -> None:
        """Repair what a killed writer or a damaged file left, deleting nothing that is complete."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        for torn in self.root.glob(".*.json.*.tmp"):  # from write_json_atomic
            torn.unlink(missing_ok=True)
        self._rebuilt = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if self.exists and self._read("store.json") is None:
            info = self.info()
            if (self.root / "store.json").exists():
                os.replace(self.root / "store.json", self.root / f"store.json.damaged-{stamp}")
            if info["base"]["sha256"]:
                write_json_atomic(self.root / "store.json", info)
                self.notes.append(f"store.json was missing or damaged: rebuilt from the manifests (base {info['base']['sha256'][:12]})")
        state = self._read("state.json")
        if not _valid_state(state) and self._version_dirs():
            if (self.root / "state.json").exists():
                os.replace(self.root / "state.json", self.root / f"state.json.damaged-{stamp}")
            state = self._rebuild_state()
            write_json_atomic(self.root / "state.json", state)
            self.notes.append(f"state.json was missing or damaged: rebuilt from {len(state['versions'])} complete "
                              f"version(s), head v{state['head']} (the latest); `seal rollback N` moves it")
        if not _valid_state(state):
            return
        listed = set(state["versions"])
        adopted = []
        for v, folder in self._version_dirs().items():
            if v in listed:  # listed versions are verified when loaded, not hashed on every lock
                continue
            m = _complete_manifest(v, folder)
            if m is not None and (m["parent"] == 0 or m["parent"] in listed):
                listed.add(v)
                adopted.append(v)
            elif m is None:  # never became complete: what a writer killed mid-way leaves
                shutil.rmtree(folder, ignore_errors=True)
            else:
                self.notes.append(f"version {v} is complete but its parent v{m['parent']} is not in the store; left as is")
        if adopted:
            state = {"head": state["head"], "versions": sorted(listed)}
            write_json_atomic(self.root / "state.json", state)
            self.notes.append(f"complete version(s) {', '.join(f'v{v}' for v in adopted)} were not listed in state.json: "
                              f"kept as inactive versions (head stays v{state['head']}; `seal rollback N` makes one head)")

    def init(self, name: str, path: Path, checksum: str) -> None:
        if self.exists:
            self.check_base(name, checksum)
            if self.info().get("rebuilt"):  # a store whose store.json was lost: write the identity again
                write_json_atomic(self.root / "store.json", {**self.info(), "base": {"name": name, "path": str(path), "sha256": checksum}})
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

    def commit(self, folder: Path, manifest: dict, parent: int | None = None, make_head: bool = True) -> int:
        """Move a fully written version folder into place and make it the head, atomically.

        The new version's parent is the head unless `parent` says otherwise (0: a version trained
        from the golden base alone, e.g. a consolidation of the head's chain). With `make_head`
        False (a version the guard rejected) it is stored and listed, and the head stays."""
        state = self.state()
        v = max([*state["versions"], *self._version_dirs()], default=0) + 1
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"}
        manifest = {**manifest, "version": v, "parent": state["head"] if parent is None else parent, "files": files}
        (folder / "manifest.json").write_text(json_text(manifest, indent=2) + "\n", encoding="utf-8")
        fsync_tree(folder)
        dest = self.root / "versions" / version_name(v)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, dest)
        fsync_dir(dest.parent)
        write_json_atomic(self.root / "state.json", {"head": v if make_head else state["head"], "versions": state["versions"] + [v]})
        return v

    def rollback(self, v: int) -> None:
        state = self.state()
        if v != 0 and v not in state["versions"]:
            raise UsageError(f"no version {v} in store {self.root} (versions: {state['versions'] or 'none'})")
        if v:
            self.adapter_dirs(v)  # refuse to make a damaged version head
        write_json_atomic(self.root / "state.json", {**state, "head": v})


def _valid_state(state) -> bool:
    return (isinstance(state, dict) and isinstance(state.get("head"), int) and isinstance(state.get("versions"), list)
            and all(isinstance(v, int) for v in state["versions"]) and (state["head"] == 0 or state["head"] in state["versions"]))


def _complete_manifest(v: int, folder: Path) -> dict | None:
    """The manifest of version folder v if it holds a complete version (checksums verified), else None."""
    try:
        m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    ok = isinstance(m, dict) and m.get("version") == v and isinstance(m.get("parent"), int) and not _check_files(folder, m)
    return m if ok else None


def _check_files(folder: Path, manifest: dict) -> str:
    """'' when the version's files are all there and match the manifest's checksums, else what is wrong.
    Manifests written before checksums were kept name no files: then the adapter files must exist."""
    files = manifest.get("files") or dict.fromkeys(LEGACY_FILES)
    for name, sha in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha is not None and sha256_file(path) != sha:
            return f"{name} does not match its sha256 in the manifest"
    return ""


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
