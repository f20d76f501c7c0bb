"""Stored LoRA adapters: their file format and their arithmetic.

An adapter is a folder in PEFT's layout (adapter_config.json + adapter_model.safetensors), which
PEFT and vLLM load. Its delta on a module's weight is B @ A * alpha / r (alpha / sqrt(r) with
rsLoRA). This module is the only one that reads those files or does that arithmetic:

- `save_adapter`: a trained PEFT adapter written in that layout;
- `lora_factors`: a stored adapter read back as (config, scale, {module: (A, B)});
- `applied_adapters`: the deltas of a chain added to a model's weights in place, and the exact
  original tensors put back on exit. Only the transformers backend (seal.core.generation), the
  inner loop training on top of a chain and `seal export --format merged` change weights this way
  (tests/test_layout.py checks it); everything else names its adapters to the backend;
- `scale_adapter`: a stored adapter's delta multiplied by a factor (the forgetting guard);
- `combined_adapter`: one adapter equal to a whole chain (`seal export --format adapter`, and
  what a backend that takes one adapter per request needs);
- `check_base_weights`: refuses to compute a golden-copy result (guard, anchors, teacher, prose
  caches) from a model whose weights carry adapters (applied deltas or an attached LoRA).
"""

from __future__ import annotations

import json
import math
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from seal.core.runtime import RuntimeFailure, SealError, UsageError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."  # PEFT's prefix of a module name in the weights file

# model -> how many `applied_adapters` blocks with at least one adapter are open on it
_CARRYING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def save_adapter(peft_model, folder: Path) -> None:
    """PEFT layout (adapter_config.json + adapter_model.safetensors), loadable by PEFT and vLLM."""
    peft_model.save_pretrained(folder, safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's empty model card


def lora_factors(folder: Path) -> tuple[dict, float, dict]:
    """A stored LoRA adapter as (its config, its scale, {module name: (A, B)}) in float32; the
    module's delta weight is B @ A * scale."""
    from safetensors.torch import load_file

    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    r, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    tensors = load_file(folder / ADAPTER_WEIGHTS)
    factors = {
        key.split(".lora_A.")[0].removeprefix(PREFIX): (a.float(), tensors[key.replace(".lora_A.", ".lora_B.")].float())
        for key, a in tensors.items() if ".lora_A." in key
    }
    return config, scale, factors


def _iter_deltas(folder: Path):
    """Yield (module name, delta weight) of a stored LoRA adapter, one module at a time."""
    _, scale, factors = lora_factors(folder)
    for module, (a, b) in factors.items():
        yield module, (b @ a) * scale


@contextmanager
def applied_adapters(model, folders: list[Path]) -> Iterator[object]:
    """Add the deltas of stored adapters to the weights in order; restore the exact originals on exit."""
    import torch

    originals: dict[str, torch.Tensor] = {}
    if folders:
        _CARRYING[model] = _CARRYING.get(model, 0) + 1
    try:
        with torch.no_grad():
            for folder in folders:
                for name, delta in _iter_deltas(folder):
                    try:
                        weight = model.get_submodule(name).weight
                    except AttributeError as e:
                        raise SealError(f"adapter {folder} does not fit this model: no module {name}") from e
                    if name not in originals:
                        originals[name] = weight.detach().clone()
                    weight.add_(delta.to(weight.dtype).to(weight.device))
        yield model
    finally:
        with torch.no_grad():
            for name, w in originals.items():
                model.get_submodule(name).weight.copy_(w)
        if folders and model in _CARRYING:  # (not there when an unclosed block ends as the model is collected)
            _CARRYING[model] -= 1


def carries_adapters(model) -> bool:
    """Whether the model's weights are not its base weights now: stored adapters applied in place
    (`applied_adapters`), or a LoRA adapter attached (PEFT sets `peft_config` on the model it wraps)."""
    return bool(_CARRYING.get(model)) or hasattr(model, "peft_config")


def check_base_weights(model, what: str) -> None:
    """Refuse to compute `what`, a result of the golden copy, from weights that carry adapters:
    cached under the base model's checksum, it would be wrong for every later run."""
    if carries_adapters(model):
        raise RuntimeFailure(f"{what} must come from the golden copy, but adapters are applied to the model")


def scale_adapter(folder: Path, factor: float) -> None:
    """Multiply a stored LoRA adapter's delta by `factor` (its B matrices; A is left as is)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / ADAPTER_WEIGHTS)
    save_file({k: (v * factor if ".lora_B." in k else v) for k, v in tensors.items()}, folder / ADAPTER_WEIGHTS,
              metadata={"format": "pt"})


def combined_adapter(folders: list[Path]) -> tuple[dict, dict]:
    """(adapter_config, tensors) of one LoRA adapter whose delta is the sum of the folders' deltas.

    Per module, the chain's A matrices are stacked and its B matrices (each times its own scale)
    set side by side, so B_cat @ A_cat is the sum of the deltas exactly; rank = the sum of the
    ranks, scale 1. Modules a link does not adapt get zero blocks."""
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
