"""`seal export`: take a store version out of the store, for transformers, PEFT, vLLM or lm-eval.

From v2 on each version's adapter was trained on top of its parents, so no single stored adapter
equals the head. Two exact ways out:

- `merged`: the base model with the deltas of the version's chain added to its weights, saved as
  a plain Hugging Face folder (safetensors, config, tokenizer with its chat template), which
  `AutoModelForCausalLM.from_pretrained(DIR)` loads.
- `adapter`: one PEFT LoRA adapter equal to the whole chain (seal.core.adapters.combined_adapter:
  per module, the chain's A matrices stacked and its B matrices, each times its own alpha / r,
  set side by side, so B_cat @ A_cat is the sum of the deltas exactly; rank = the sum of the
  ranks, scale 1).

Both write `seal-export.json`: the versions and documents that went in, the base model's identity
and the sha256 of every file written. The folder is written beside the target and renamed into
place, so a killed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from seal.core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, applied_adapters, combined_adapter
from seal.core.models import LoadedModel
from seal.core.runtime import UsageError, fsync_dir, fsync_tree, json_text, sha256_file
from seal.core.store import KnowledgeStore

FORMATS = ("merged", "adapter")
MANIFEST = "seal-export.json"


def check_export(out: Path, fmt: str) -> None:
    """What an export can refuse without the model: the format, and an `out` that holds something."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (merged or adapter)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not empty; export into a new folder")


def export_version(lm: LoadedModel, store: KnowledgeStore, version: int, out: Path, fmt: str) -> dict:
    """Write version `version` of the store (0: the golden copy) to `out` in format `fmt`."""
    check_export(out, fmt)
    store.check_base(lm.name, lm.checksum)
    chain = store.chain(version)
    folders = store.adapter_dirs(version)  # checksums verified
    if fmt == "adapter" and not folders:
        raise UsageError("version 0 is the base model itself: there is no adapter to export (use --format merged)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if fmt == "merged":
            with applied_adapters(lm.model, folders):
                lm.model.save_pretrained(tmp, safe_serialization=True)
            lm.tokenizer.save_pretrained(tmp)
        else:
            from safetensors.torch import save_file

            config, tensors = combined_adapter(folders)
            config["base_model_name_or_path"] = str(lm.path)
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        manifests = [store.manifest(v) for v in chain]
        record = {
            "format": fmt, "version": version, "chain": chain, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base": {"name": lm.name, "path": str(lm.path), "sha256": lm.checksum},
            "documents": [{**d, "version": m["version"]} for m in manifests for d in m.get("documents", [])],
            "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()},
        }
        (tmp / MANIFEST).write_text(json_text(record, indent=2) + "\n", encoding="utf-8")
        fsync_tree(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
        fsync_dir(out.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return record
