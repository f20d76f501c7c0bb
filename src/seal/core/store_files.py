"""What a knowledge store holds on disk, read safely: JSON files opened without following symbolic
links (nor blocking on a FIFO), the shape of a version's manifest, its files against their checksums,
and the writer's lock file. `seal.core.store` builds the store on these.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

from seal.core.runtime import RuntimeFailure, sha256_file

LEGACY_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what every version folder holds
VERSION_NAME = re.compile(r"v([0-9]{4})")  # ASCII digits only: "v٠٠٠٢" is not version 2
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; on Windows the is_symlink() checks stand alone
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not hang
# Manifest fields the code reads, and the type each must have when present.
FIELD_TYPES = {"documents": list, "training_sequences": list, "training_examples": list, "inherited_examples": list,
               "probes": list, "timings": dict, "metrics": dict, "config": dict, "created": str, "guard": (dict, type(None))}


def empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def normalised_state(state) -> dict | None:
    """state.json's content with each version listed once, in order; None when it is not a valid state."""
    if not isinstance(state, dict):
        return None
    head, versions = state.get("head"), state.get("versions")
    if type(head) is not int or not isinstance(versions, list) or not all(type(v) is int and v > 0 for v in versions):
        return None
    if head != 0 and head not in versions:
        return None
    return {"head": head, "versions": sorted(set(versions))}


def load_json(path: Path):
    """The JSON value of a plain file, opened without following a symbolic link or blocking on a FIFO.
    FileNotFoundError when it is missing, ValueError when it is anything but readable JSON."""
    if not _NOFOLLOW and path.is_symlink():
        raise ValueError("it is a symbolic link")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("it is a symbolic link") from None
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(e.strerror or str(e)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("it is not a plain file")
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))  # ValueError: not UTF-8, not JSON, or an integer too long
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def read_manifest(v: int, folder: Path) -> tuple[dict | None, str]:
    """(version v's manifest, '') from its folder, or (None, what is wrong with it)."""
    if folder.is_symlink():
        return None, "its folder is a symbolic link"
    try:
        m = load_json(folder / "manifest.json")
    except FileNotFoundError:
        return None, "manifest.json is missing"
    except ValueError as e:
        return None, f"manifest.json is not readable JSON: {' '.join(str(e).split())[:200]}"
    problem = manifest_problem(v, m)
    return (None, problem) if problem else (m, "")


def manifest_problem(v: int, m) -> str:
    """'' when m has the shape of version v's manifest, else what is wrong with it."""
    if not isinstance(m, dict):
        return "manifest.json is not a JSON object"
    if type(m.get("version")) is not int or m["version"] != v:
        return f"manifest.json names version {str(m.get('version'))[:20]}, not {v}"
    parent = m.get("parent")
    if type(parent) is not int or not 0 <= parent < v:  # a parent is always older: this also rules out cycles
        return f"manifest.json names parent {str(parent)[:20]}, not an earlier version"
    files = m.get("files")
    if files is not None and not (isinstance(files, dict) and all(_plain_name(k) and isinstance(s, str) for k, s in files.items())):
        return "manifest.json has a malformed list of files"
    for key, kind in FIELD_TYPES.items():
        if key in m and not isinstance(m[key], kind):
            return f"manifest.json's {key} has the wrong type"
    if not all(isinstance(d, dict) and isinstance(d.get("title"), str) for d in m.get("documents", [])):
        return "manifest.json's documents are malformed"
    return ""


def _plain_name(name) -> bool:
    """A file name inside a version folder (a manifest must not point elsewhere)."""
    return isinstance(name, str) and name not in ("", ".", "..", "manifest.json") and not set(name) & {"/", "\\", "\0"}


def inspect_version(v: int, folder: Path) -> tuple[dict | None, str]:
    """(manifest, '') when folder holds a complete version v, its checksums verified; else (None, what is wrong)."""
    if not folder.is_symlink() and not folder.is_dir():
        return None, "it is not a folder"
    m, problem = read_manifest(v, folder)
    problem = problem or check_files(folder, m)
    return (None, problem) if problem else (m, "")


def check_files(folder: Path, manifest: dict) -> str:
    """'' when the version's files are all there and match the manifest's checksums, else what is wrong.
    Manifests written before checksums were kept name no files: then the adapter files must exist and
    the safetensors file must parse, its tensors filling it exactly (a flipped weight goes unseen)."""
    files = manifest.get("files") or dict.fromkeys(LEGACY_FILES)
    for name, sha in files.items():
        path = folder / name
        if path.is_symlink():
            return f"{name} is a symbolic link"
        if not path.is_file():
            return f"{name} is missing"
        if sha is not None and sha256_file(path) != sha:
            return f"{name} does not match its sha256 in the manifest"
        if sha is None and name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
            if problem:
                return f"{name} {problem}"
    return ""


def _safetensors_problem(path: Path) -> str:
    """'' when a safetensors file's header parses and its tensors' sizes fill the file exactly."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as e:  # safetensors' own error type for a torn or foreign file
        return f"is not a whole safetensors file ({' '.join(str(e).split())[:200]})"
    return ""


def open_lock(path: Path) -> int:
    """The lock file, opened for writing only when it is a plain file of its own: never through a
    symbolic link (whose target would be truncated), a hard link, a FIFO, a device or a folder."""
    def refused(what: str) -> RuntimeFailure:
        return RuntimeFailure(f"store {path.parent}: {path.name} is {what}; seal writes its process id only to a "
                              f"plain {path.name} file of its own, so it left this one untouched: remove it and try again")

    if path.is_symlink():
        raise refused("a symbolic link")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise refused("a symbolic link" if e.errno == errno.ELOOP else "not a plain file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise refused("a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a plain file")
    return fd


def try_lock(fd: int) -> bool:
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
