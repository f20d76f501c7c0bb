"""seal: Self-Adapting Language Models (Zweiger et al., arXiv 2506.10943) you can run.

A model reads a document, writes its own training data about it (a self-edit), fine-tunes a
LoRA adapter on it (the inner loop), and the knowledge store keeps or rolls back the change.
"""

__version__ = "0.1.0"
