"""Small process-level helpers: derived seeds, peak memory, atomic file writes, errors, quiet libraries."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any


class SealError(Exception):
    """An error the CLI prints as one line, exiting with `exit_code`: 2 for what the user's input
    caused (the default), 1 for a failure at run time (see `RuntimeFailure`)."""

    exit_code = 2


class UsageError(SealError):
    """Bad input: an option, a file, a folder or a document that seal refuses (exit status 2)."""


class RuntimeFailure(SealError):
    """Something failed while running: a damaged store, a diverged training, a remote endpoint that
    did not answer, a busy store (exit status 1). Nothing half-done is committed."""

    exit_code = 1


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so that it is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def json_text(obj: Any, **kw) -> str:
    """Strict JSON text (no bare NaN or Infinity, which strict parsers reject); UTF-8 kept as is."""
    kw.setdefault("ensure_ascii", False)
    return json.dumps(finite_json(obj), allow_nan=False, **kw)


def quiet_libraries(verbose: bool = False) -> None:
    """Offline, and no library chatter (advisories, FutureWarnings, weight-loading bars) on stderr
    unless `verbose` (seal --verbose): called by the CLI and by every Ray worker, whose stderr is
    streamed into the driver's log."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*requires_grad=True to a scalar.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from a trial's identity, stable across runs, machines and Python versions."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory when a GPU was used)."""
    import resource  # POSIX only; imported here so that the CLI loads on Windows

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024  # bytes on macOS
    out = {"peak_rss_mb": round(rss_kb * scale, 1)}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:  # pragma: no cover
        pass
    return out


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (before it is renamed into place)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(Path(dirpath) / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json_text(obj, indent=2))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(url: str | None) -> str | None:
    """A URL without the `user:key@` part, for anything written to disk or printed."""
    return None if url is None else _URL_CREDENTIALS.sub("***@", url)
