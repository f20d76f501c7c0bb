"""Shared fixtures. The fast tier runs on a tiny random Llama built offline here (no downloads);
the slow tier (`-m slow`) uses the embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = """Porto Lisbon Bergen Lagos Nairobi ferry battery tram signal company engineer question answer
The quick brown fox jumps over the lazy dog. Q: Who built it? A: Volthaven built it in 2026.
Numbers 0 1 2 3 4 5 6 7 8 9 million euros kilometres per day March April May June
""" * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(folder: Path, chat: bool = True) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on a few lines, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS.splitlines(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        initializer_range=0.2, tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture()
def tiny_lm(tiny_model_dir):
    import torch

    from seal.core.models import load_model

    # A 32-wide model gains nothing from threads, and spinning OpenMP threads slow it down
    # badly whenever another process shares the two cores.
    torch.set_num_threads(1)
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def embedded_lm():
    import torch

    from seal.core.models import load_model

    # OMP_NUM_THREADS (if set) wins: lets the slow tier share the cores with another job.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    return load_model(None)


def run_seal(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "seal.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
