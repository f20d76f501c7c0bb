"""The knowledge store: a golden copy of the base model and a versioned sandbox of adapters.

Layout of a store folder:

    store.json            base model identity (name, path, sha256 of its weights); written once
    state.json            the commit point: {"head": N, "versions": [1, 2, ...]}
    versions/v0001/       adapter_config.json, adapter_model.safetensors, manifest.json
    quarantine/v0002-T/   a version folder recovery moved aside at time T (v0002/) and why (reason.json)
    tmp/                  versions being written; anything here is garbage after a crash
    jobs/                 `seal serve`'s learn jobs, one JSON file each (seal.serve), kept across restarts
    .lock                 the lock held by the one process that may write

The base weights are never written. The head is the base model plus the deltas of the versions
on the parent chain of `head`, applied in order; a parent always has a smaller number than its
child (a manifest that says otherwise is damaged), so every chain ends. A version becomes head
only when `state.json` (replaced atomically) says so, so a writer killed at any moment leaves the
previous head. Rollback moves `head`; later versions stay on disk and can be made head again.

Nothing under versions/ is ever deleted. Each manifest holds the sha256 of its version's files,
checked whenever the version is loaded (a damaged adapter is named in a one-line error, never
used). When the writer lock is taken, each version folder missing from `state.json` is examined:
a complete one (a writer killed between the rename and the commit, or an older `state.json`
restored from a backup) is adopted back into the list without moving the head; a damaged or
incomplete one, or one whose parent is not in the store, is moved to quarantine/, named in a
one-line warning and in `seal history`, and `seal restore NAME` moves it back once repaired (or
once its parent is back). A missing or unreadable `state.json` (or `store.json`) is rebuilt from
the version folders the same way, the damaged file kept beside it. Only tmp/ and empty version
folders are removed.

A store may arrive as someone else's archive, so nothing in it is followed out of it: a `.lock`
that is a symbolic link, hard link or anything but a plain file is refused (it is written to),
as are `versions/`, `tmp/` and `quarantine/` as symbolic links; JSON files are read without
following links, and a linked `state.json` or `store.json` counts as damaged, a linked version
folder or file as a damaged version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from seal.core.runtime import RuntimeFailure, UsageError, fsync_dir, fsync_tree, json_text, sha256_file, write_json_atomic
from seal.core.store_files import (VERSION_NAME, check_files, empty_dir, inspect_version, load_json,
                                   normalised_state, open_lock, read_manifest, try_lock)

FORMAT_VERSION = 1
REASON = "reason.json"  # in a quarantine entry, beside the version folder it holds


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
        self.notes: list[str] = []  # what recovery did or found, for the CLI to print as warnings
        self._rebuilt: dict | None = None

    # -- reading ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        """A folder of the store, refused when it is a symbolic link (its files would live elsewhere)."""
        path = self.root / name
        if path.is_symlink():
            raise RuntimeFailure(f"store {self.root}: {name}/ is a symbolic link; seal keeps a store's files inside "
                                 "its folder (replace the link with the folder it points to)")
        return path

    def _version_dirs(self) -> dict[int, Path]:
        """Every entry of versions/ named like a version (a folder or not), by number."""
        versions = self._dir("versions")
        out = {}
        if versions.is_dir():
            for d in versions.iterdir():
                match = VERSION_NAME.fullmatch(d.name)
                if match:
                    out[int(match[1])] = d
        return dict(sorted(out.items()))

    @property
    def exists(self) -> bool:
        versions = self._version_dirs()  # first: a linked versions/ is refused for readers too
        return (self.root / "store.json").is_file() or (self.root / "state.json").is_file() or bool(versions)

    def _read(self, name: str) -> dict | None:
        """A top-level JSON file, or None when it is missing or unreadable (then rebuilt)."""
        try:
            data = load_json(self.root / name)
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def info(self) -> dict:
        info = self._read("store.json")
        base = (info or {}).get("base")
        if isinstance(base, dict) and isinstance(base.get("sha256"), str) and isinstance(base.get("name"), str):
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
        state = normalised_state(self._read("state.json"))
        if state is not None:
            return state
        if self._rebuilt is None:
            self._rebuilt, _, bad = self._scan(None)
            if self._rebuilt["versions"] or bad:
                self.notes.append(f"state.json is missing or damaged: read from the version folders (head v{self._rebuilt['head']}, "
                                  "the latest); the next `seal learn` or `seal rollback` writes it again")
            self.notes += [f"version {v} cannot be used ({why}); the next `seal learn` or `seal rollback` moves it to "
                           f"{self.root / 'quarantine'}" for v, why in bad.items()
                           if not empty_dir(self.root / "versions" / version_name(v))]
        return self._rebuilt

    @property
    def head(self) -> int:
        return self.state()["head"]

    def manifest(self, v: int) -> dict:
        m, problem = read_manifest(v, self._dir("versions") / version_name(v))
        if problem:
            raise RuntimeFailure(f"store {self.root}: version {v} is damaged ({problem})")
        return m

    def manifests(self) -> list[dict]:
        return [self.manifest(v) for v in self.state()["versions"]]

    def chain(self, v: int | None = None) -> list[int]:
        """Versions whose deltas make up version v (default: the head), oldest first."""
        v = self.head if v is None else v
        known = set(self.state()["versions"])
        if v != 0 and v not in known:
            raise self._no_version(v, sorted(known))
        out = []
        while v:  # each parent is smaller (manifest() refuses one that is not), so a cycle cannot loop
            out.append(v)
            v = self.manifest(v)["parent"]
        return out[::-1]

    def _no_version(self, v: int, versions: list[int]) -> UsageError:
        held = [q["name"] for q in self.quarantined() if q["version"] == v]
        return UsageError(f"no version {v} in store {self.root} (versions: {versions or 'none'})"
                          + (f"; it is in quarantine as {held[-1]} (`seal restore {held[-1]}` once repaired)" if held else ""))

    def verify(self, v: int) -> Path:
        """The folder of version v after checking its files against the manifest's checksums."""
        folder = self._dir("versions") / version_name(v)
        manifest = self.manifest(v)
        problem = check_files(folder, manifest)
        if problem:
            raise RuntimeFailure(
                f"store {self.root}: version {v} is damaged ({problem}); it is not used. "
                f"Make an earlier version head with `seal rollback N` (see `seal history`)"
            )
        if not manifest.get("files"):
            self.notes.append(f"version {v} was written by an older seal without checksums: only checked that "
                              "its adapter file is a whole safetensors file")
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

    def quarantined(self) -> list[dict]:
        """The version folders recovery moved aside, by name: {"name", "version", "reason", "path"}."""
        root = self._dir("quarantine")
        out = []
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            held = [p for p in entry.iterdir() if VERSION_NAME.fullmatch(p.name)] if entry.is_dir() and not entry.is_symlink() else []
            if len(held) != 1:
                continue  # not one of ours
            try:
                reason = str(load_json(entry / REASON)["reason"])
            except (OSError, ValueError, KeyError, TypeError):
                reason = "unknown (no readable reason.json)"
            out.append({"name": entry.name, "version": int(held[0].name[1:]), "reason": reason, "path": str(held[0])})
        return out

    # -- recovery --------------------------------------------------------------------------
    def _complete_manifests(self) -> dict[int, dict]:
        """Manifests of the version folders that hold a complete version, checksums verified."""
        out = {}
        for v, folder in self._version_dirs().items():
            m, _ = inspect_version(v, folder)
            if m is not None:
                out[v] = m
        return out

    def _scan(self, state: dict | None) -> tuple[dict, list[int], dict[int, str]]:
        """The version folders beside a valid `state` (None: one missing or damaged, rebuilt from them).
        Returns the state with every complete unlisted version whose parent is listed adopted (the head
        stays; a rebuilt head is the latest version the guard did not reject), the versions adopted, and
        the unlisted folders that are not usable, with why."""
        listed = set() if state is None else set(state["versions"])
        adopted, bad, rejected = [], {}, set()
        for v, folder in self._version_dirs().items():
            if v in listed:  # listed versions are verified when loaded, not hashed on every lock
                continue
            m, problem = inspect_version(v, folder)
            if m is not None and m["parent"] and m["parent"] not in listed:
                problem = f"its parent v{m['parent']} is not in the store"
            if problem:
                bad[v] = problem
                continue
            listed.add(v)
            adopted.append(v)
            if (m.get("guard") or {}).get("decision") == "rejected":
                rejected.add(v)
        head = max(listed - rejected, default=0) if state is None else state["head"]
        return {"head": head, "versions": sorted(listed)}, adopted, bad

    # -- writing (only under lock) ---------------------------------------------------------
    @contextmanager
    def lock(self, wait_seconds: float = 0.0) -> Iterator["KnowledgeStore"]:
        """Exclusive writer lock; fails with a clear message if another process holds it."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"store {self.root} is a file, not a folder; pass --store FOLDER")
        self.root.mkdir(parents=True, exist_ok=True)
        fd = open_lock(self.root / ".lock")
        try:
            deadline = time.monotonic() + wait_seconds
            while not try_lock(fd):
                if time.monotonic() >= deadline:
                    holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                    raise RuntimeFailure(
                        f"store {self.root} is busy: another seal process (pid {holder}) is writing to it; "
                        "try again when it finishes"
                    )
                time.sleep(0.5)
            os.ftruncate(fd, 0)  # our own plain file: open_lock refused anything else
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, str(os.getpid()).encode())
            self._recover()
            yield self
        finally:
            os.close(fd)  # closing releases the lock

    def _recover(self) -> None:
        """Repair what a killed writer or a damaged file left: versions not usable are moved to
        quarantine/, and nothing is deleted but tmp/, torn temporary files and empty version folders."""
        shutil.rmtree(self._dir("tmp"), ignore_errors=True)
        for torn in self.root.glob(".*.json.*.tmp"):  # from write_json_atomic
            torn.unlink(missing_ok=True)
        self._rebuilt = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self._recover_info(stamp)
        raw = self._read("state.json")
        state = normalised_state(raw)
        if state is None:
            if not self._version_dirs():
                return  # nothing to rebuild from: the first commit writes state.json
            if os.path.lexists(self.root / "state.json"):
                os.replace(self.root / "state.json", self.root / f"state.json.damaged-{stamp}")
        new, adopted, bad = self._scan(state)
        for v, why in bad.items():
            self._set_aside(v, why, stamp)
        if state is None:
            self.notes.append(f"state.json was missing or damaged: rebuilt from {len(new['versions'])} complete "
                              f"version(s), head v{new['head']} (the latest); `seal rollback N` moves it")
        elif adopted:
            self.notes.append(f"complete version(s) {', '.join(f'v{v}' for v in adopted)} were not listed in state.json: "
                              f"kept as inactive versions (head stays v{new['head']}; `seal rollback N` makes one head)")
        if state is not None and len(raw["versions"]) != len(state["versions"]):
            self.notes.append("state.json listed a version more than once: now each once")
        if new != raw:
            write_json_atomic(self.root / "state.json", new)

    def _recover_info(self, stamp: str) -> None:
        """Rebuild a missing or damaged store.json from the manifests' base checksum."""
        info = self.info() if self.exists else {}
        if not info.get("rebuilt"):
            return
        if os.path.lexists(self.root / "store.json"):
            os.replace(self.root / "store.json", self.root / f"store.json.damaged-{stamp}")
        if info["base"]["sha256"]:
            write_json_atomic(self.root / "store.json", info)
            self.notes.append(f"store.json was missing or damaged: rebuilt from the manifests (base {info['base']['sha256'][:12]})")

    def _set_aside(self, v: int, why: str, stamp: str) -> None:
        """Move version folder v into quarantine/ with the reason, in one line of notes. An empty folder
        (holding nothing to lose) is removed instead."""
        folder = self._dir("versions") / version_name(v)
        if empty_dir(folder):
            folder.rmdir()
            return
        quarantine = self._dir("quarantine")
        entry, n = quarantine / f"{version_name(v)}-{stamp}", 1
        while os.path.lexists(entry):
            n += 1
            entry = quarantine / f"{version_name(v)}-{stamp}-{n}"
        entry.mkdir(parents=True)
        os.rename(folder, entry / folder.name)  # the link itself when it is one: nothing outside is touched
        write_json_atomic(entry / REASON, {"version": v, "reason": why, "quarantined": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        fsync_dir(folder.parent)
        self.notes.append(f"version {v} cannot be used ({why}): moved to {entry}, nothing deleted; "
                          f"`seal restore {entry.name}` puts it back once repaired")

    def restore(self, name: str) -> int:
        """Move the quarantined version `name` (as `quarantined()` names it) back into versions/, listed
        as an inactive version (the head stays). Refused, with the reason, while it still cannot be
        used. Returns its number. Call it under `lock()`."""
        entry = next((q for q in self.quarantined() if q["name"] == name), None)
        if entry is None:
            names = ", ".join(q["name"] for q in self.quarantined()) or "none"
            raise UsageError(f"no quarantined version {name!r} in store {self.root} (quarantined: {names})")
        v, held = entry["version"], Path(entry["path"])
        state = self.state()
        m, problem = inspect_version(v, held)
        if m is not None and m["parent"] and m["parent"] not in state["versions"]:
            problem = f"its parent v{m['parent']} is not in the store; restore that first"
        if problem:
            raise RuntimeFailure(f"{name} still cannot be used ({problem}); it stays in {held.parent}")
        dest = self._dir("versions") / version_name(v)
        if os.path.lexists(dest):
            raise RuntimeFailure(f"cannot restore {name}: {dest} exists; move it away first")
        dest.parent.mkdir(exist_ok=True)
        os.rename(held, dest)
        fsync_dir(dest.parent)
        write_json_atomic(self.root / "state.json", {**state, "versions": sorted({*state["versions"], v})})
        (held.parent / REASON).unlink(missing_ok=True)
        with suppress(OSError):  # something else was put there: left as it is
            held.parent.rmdir()
        return v

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
        self._dir("versions").mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / "state.json", {"head": 0, "versions": []})
        write_json_atomic(self.root / "store.json", info)

    def new_version_dir(self) -> Path:
        tmp = self._dir("tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="version-", dir=tmp))

    def commit(self, folder: Path, manifest: dict, parent: int | None = None, make_head: bool = True) -> int:
        """Move a fully written version folder into place and make it the head, atomically.

        The new version's parent is the head unless `parent` says otherwise (0: a version trained
        from the golden base alone, e.g. a consolidation of the head's chain). With `make_head`
        False (a version the guard rejected) it is stored and listed, and the head stays. Its
        number is new to the store, quarantined numbers included, so a restore never collides."""
        state = self.state()
        taken = [*state["versions"], *self._version_dirs(), *(q["version"] for q in self.quarantined())]
        v = max(taken, default=0) + 1
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"}
        manifest = {**manifest, "version": v, "parent": state["head"] if parent is None else parent, "files": files}
        (folder / "manifest.json").write_text(json_text(manifest, indent=2) + "\n", encoding="utf-8")
        fsync_tree(folder)
        dest = self._dir("versions") / version_name(v)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, dest)
        fsync_dir(dest.parent)
        write_json_atomic(self.root / "state.json", {"head": v if make_head else state["head"], "versions": state["versions"] + [v]})
        return v

    def rollback(self, v: int) -> None:
        state = self.state()
        if v != 0 and v not in state["versions"]:
            raise self._no_version(v, state["versions"])
        if v:
            self.adapter_dirs(v)  # refuse to make a damaged version head
        write_json_atomic(self.root / "state.json", {**state, "head": v})
