"""What a run ran on: Python and library versions, torch's thread count and the device.

Numbers move with them (a torch or transformers upgrade changes sampling and training numerics;
the thread count changes float summation order), so every benchmark run's config.json and every
store version's manifest records `environment()`.

A resumed run folder is not refused for running on another environment: its trials already on
disk stay valid records of what they ran on, and refusing would throw hours of trials away over
a patch release. The folder's config.json lists every environment it was run or resumed on, in
order, under ENVIRONMENTS, and the config comparison leaves that key out (`--fresh` starts over).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

ENVIRONMENTS = "environments"  # config.json key: the environments the folder was run or resumed on
LIBRARIES = ("seal", "torch", "transformers", "peft", "pysbd")


def default_device() -> str:
    """The device `load_model` puts a model on when none is given."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(model=None) -> dict:
    """Versions, torch threads and device; the device is the model's, else the default one."""
    import torch

    device = str(next(model.parameters()).device) if model is not None else default_device()
    return {
        "python": platform.python_version(),
        **{name: _version(name) for name in LIBRARIES},
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "platform": platform.platform(),
    }


def config_differences(old: dict, new: dict) -> list[str]:
    """The config keys whose values differ between two config.json dicts, environments aside."""
    return sorted(k for k in set(old) | set(new) if k != ENVIRONMENTS and old.get(k) != new.get(k))


def add_environment(conf: dict, env: dict, previous: dict | None = None) -> dict:
    """conf with the previous config's environments, plus env if it is new."""
    envs = list((previous or {}).get(ENVIRONMENTS, []))
    return {**conf, ENVIRONMENTS: envs if env in envs else envs + [env]}
