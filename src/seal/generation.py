"""Text generation backend on transformers: prompt rendering and batched sampling.

This is the only module that calls `model.generate`; a vLLM backend for GPUs would offer the
same two functions.
"""

from __future__ import annotations

from .models import LoadedModel


def render_prompt(lm: LoadedModel, instruction: str, system: str | None = None) -> str:
    """The chat template for instruct models, a plain prompt for base models."""
    if lm.is_chat:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": instruction})
        return lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head = f"{system}\n\n" if system else ""
    return f"{head}{instruction}\n\n"


def generate(
    lm: LoadedModel,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    seed: int = 0,
    repetition_penalty: float = 1.0,
    stop_strings: list[str] | None = None,
) -> list[list[str]]:
    """Complete every prompt; returns, per prompt, `num_return_sequences` completions.

    All prompts (times their samples) run as one left-padded batch. temperature 0 is greedy, and
    its samples are all the same completion (computed once). `stop_strings` end a sequence early
    once it contains one of them (the text up to and including it is returned; greedy output is
    otherwise unchanged): the batch stops when every sequence has.
    """
    import torch

    tok, model = lm.tokenizer, lm.model
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    sample = temperature > 0
    kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        num_return_sequences=num_return_sequences if sample else 1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        repetition_penalty=repetition_penalty,
    )
    if stop_strings:
        kwargs.update(stop_strings=stop_strings, tokenizer=tok)
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    torch.manual_seed(seed)
    with torch.no_grad():
        # Only ids and mask: a tokenizer may add token_type_ids, which transformers < 5 refuses in generate.
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    if not sample:
        return [[t] * num_return_sequences for t in texts]
    n = num_return_sequences
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def generate_stream(lm: LoadedModel, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                    seed: int = 0, stop_strings: list[str] | None = None):
    """Complete one prompt, yielding the text as it is decoded (for streaming servers).

    The generation runs in a thread that the caller must let finish (iterate to the end)."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    tok, model = lm.tokenizer, lm.model
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max_new_tokens,
                  do_sample=temperature > 0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, streamer=streamer)
    if stop_strings:
        kwargs.update(stop_strings=stop_strings, tokenizer=tok)
    kwargs.update(dict(temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else dict(temperature=None, top_p=None, top_k=None))

    def run():
        torch.manual_seed(seed)
        with torch.no_grad():
            model.generate(**kwargs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        thread.join()
