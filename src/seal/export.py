"""`seal export`: take a store version out of the store, for transformers, PEFT, vLLM or lm-eval.

From v2 on each version's adapter was trained on top of its parents, so no single stored adapter
equals the head. Two exact ways out:

- `merged`: the base model with the deltas of the version's chain added to its weights, saved as
  a plain Hugging Face folder (safetensors, config, tokenizer with its chat template), which
  `AutoModelForCausalLM.from_pretrained(DIR)` loads.
- `adapter`: one PEFT LoRA adapter equal to the whole chain. Per module, the chain's A matrices are
  stacked and its B matrices (each times its own alpha / r) set side by side, so B_cat @ A_cat is
  the sum of the deltas exactly; rank = the sum of the ranks, scale 1. Modules a link does not
  adapt get zero blocks.

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

from seal.core.inner_loop import ADAPTER_CONFIG, ADAPTER_WEIGHTS, applied_adapters, lora_factors
from seal.core.models import LoadedModel
from seal.core.runtime import UsageError, fsync_dir, fsync_tree, json_text, sha256_file
from seal.core.store import KnowledgeStore

FORMATS = ("merged", "adapter")
MANIFEST = "seal-export.json"
PREFIX = "base_model.model."


def _combined_adapter(folders: list[Path]) -> tuple[dict, dict]:
    """(adapter_config, tensors) of one LoRA adapter whose delta is the sum of the folders' deltas."""
    import torch

    links = []
    for folder in folders:
        config, scale, factors = lora_factors(folder)
        if config.get("rank_pattern") or config.get("alpha_pattern"):
            raise UsageError(f"{folder}: adapters with per-module ranks are not supported by --format adapter")
        links.append((config, config["r"], {m: (a, b * scale) for m, (a, b) in factors.items()}))
    modules = sorted({m for _, _, pairs in links for m in pairs})
    shapes = {}  # module -> (in_features, out_features)
    for _, _, pairs in links:
        for m, (a, b) in pairs.items():
            shapes[m] = (a.shape[1], b.shape[0])
    rank = sum(r for _, r, _ in links)
    out = {}
    for m in modules:
        n_in, n_out = shapes[m]
        a_blocks, b_blocks = [], []
        for _, r, pairs in links:
            a, b = pairs.get(m, (torch.zeros(r, n_in), torch.zeros(n_out, r)))
            a_blocks.append(a)
            b_blocks.append(b)
        out[f"{PREFIX}{m}.lora_A.weight"] = torch.cat(a_blocks, dim=0).contiguous()
        out[f"{PREFIX}{m}.lora_B.weight"] = torch.cat(b_blocks, dim=1).contiguous()
    config = dict(links[0][0])
    config.update(r=rank, lora_alpha=rank, use_rslora=False, lora_dropout=0.0, rank_pattern={}, alpha_pattern={},
                  target_modules=sorted({m.rsplit(".", 1)[-1] for m in modules}))
    return config, out


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

            config, tensors = _combined_adapter(folders)
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
