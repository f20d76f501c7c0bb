"""seal: Self-Adapting Language Models (Zweiger et al., arXiv 2506.10943) you can run.

A model reads a document, writes its own training data about it (a self-edit), fine-tunes a
LoRA adapter on it (the inner loop), and the knowledge store keeps or rolls back the change.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from seal import Seal` without importing torch and transformers for `import seal` alone
    if name in ("Seal", "Answer"):
        from seal import api

        return getattr(api, name)
    if name in ("SealError", "UsageError", "RuntimeFailure"):
        from seal.core import runtime

        return getattr(runtime, name)
    if name in ("LearnConfig", "GuardConfig", "InnerLoopConfig", "SamplingConfig"):
        from seal.core import config

        return getattr(config, name)
    raise AttributeError(f"module 'seal' has no attribute {name!r}")
