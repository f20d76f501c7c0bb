"""The generic machinery under every domain: loading the base model (`models`), generating text
with stored adapters (`generation`), the paper's inner loop (`inner_loop`: a fresh LoRA adapter,
trained, evaluated, kept or discarded), the versioned knowledge store (`store`), run folders and
their records (`run_records`), configuration, progress and runtime helpers. Nothing here imports
from the layers above (domains, guard, learn, rl, bench, cli)."""
