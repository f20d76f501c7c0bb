"""The model backend: the `Generator` seam, its Hugging Face implementation, and a scripted one.

Everything that generates or scores text asks a `Generator`, naming the stored adapters (oldest
first) to run with: `generate(prompts, adapters=..., sampling=...)` for completions of rendered
prompts, `loglikelihood(items, adapters=...)` for the log-probability of continuations (the
canary's and ARC's choices), `answer_logprob` for one known answer, `perplexity` for held-out
text. The generator applies the adapters itself and leaves the weights as it found them, so no
caller changes weights in place, and a backend that takes adapters per request (vLLM's LoRA
requests) can take this one's place. The adapters are applied on top of the model as it stands:
inside the inner loop that is the trial's live LoRA adapter (and the stored ones it trains on).

- `HFGenerator`: transformers; adds the adapters' deltas for the call and restores the exact
  weights after (`resident=True`: a model copy that only this generator uses keeps the last
  chain applied between calls, as a server does).
- `ScriptedGenerator`: completions and scores from functions, for tests (records every call).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from seal.core.adapters import applied_adapters
from seal.core.models import LoadedModel
from seal.core.packing import choice_logprobs, token_ids


@dataclass(frozen=True)
class Sampling:
    """How to decode. temperature 0 is greedy (its `n` completions are all the same one); `stop`
    ends a completion once it contains one of the strings (the text up to and including it is
    returned); `seed` seeds the sampler before every batch."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()


class Generator(Protocol):
    def generate(self, prompts: list[str], *, adapters: Sequence[Path] = (), sampling: Sampling,
                 batch_size: int | None = None, on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        """Per prompt, `sampling.n` completions from the model with `adapters` applied; prompts run
        in batches of `batch_size` (all at once when None), `on_batch(size)` after each."""

    def stream(self, prompt: str, *, adapters: Sequence[Path] = (), sampling: Sampling) -> Iterator[str]:
        """One completion of one prompt, yielded piece by piece as it is decoded."""

    def loglikelihood(self, items: Sequence[tuple[str, Sequence[str]]], *,
                      adapters: Sequence[Path] = ()) -> list[list[float]]:
        """For each (context, continuations) item, the log-probability of each continuation after
        the tokenizer's start tokens and the context (its tokens' log-probabilities summed)."""

    def answer_logprob(self, prompt: str, answer: str, *, adapters: Sequence[Path] = ()) -> float:
        """log p(answer | prompt), both tokenized as they are (no start tokens): how close the model
        is to a known answer."""

    def perplexity(self, text: str, *, adapters: Sequence[Path] = (), window: int = 512) -> float:
        """Token-level perplexity of `text`, read in non-overlapping windows of `window` tokens."""


def render_prompt(lm: LoadedModel, instruction: str, system: str | None = None) -> str:
    """The chat template for instruct models, a plain prompt for base models."""
    if lm.is_chat:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": instruction})
        return lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head = f"{system}\n\n" if system else ""
    return f"{head}{instruction}\n\n"


def _decoding(tok, sampling: Sampling) -> dict:
    sample = sampling.temperature > 0
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sample, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, repetition_penalty=sampling.repetition_penalty)
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
    if sample:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


class HFGenerator:
    """Generation with transformers on a loaded model; the only code that calls `model.generate`."""

    def __init__(self, lm: LoadedModel, resident: bool = False):
        self.lm = lm
        self.resident = resident
        self._applied: tuple[Path, ...] = ()
        self._stack = contextlib.ExitStack()

    def _with(self, adapters: Sequence[Path]):
        chain = tuple(Path(a) for a in adapters)
        if not self.resident:
            return applied_adapters(self.lm.model, list(chain)) if chain else contextlib.nullcontext()
        if chain != self._applied:  # swap the resident chain: back to the exact base weights, then the new one
            self._stack.close()
            self._stack = contextlib.ExitStack()
            self._applied = ()
            if chain:
                self._stack.enter_context(applied_adapters(self.lm.model, list(chain)))
            self._applied = chain
        return contextlib.nullcontext()

    def preload(self, adapters: Sequence[Path]) -> None:
        """Make `adapters` the resident chain now (a server switching heads between requests)."""
        if not self.resident:
            raise ValueError("only a resident generator keeps adapters applied")
        self._with(adapters)

    def release(self) -> None:
        """Put the base weights back (a resident generator's applied chain leaves)."""
        self._stack.close()
        self._applied = ()

    def generate(self, prompts: list[str], *, adapters: Sequence[Path] = (), sampling: Sampling,
                 batch_size: int | None = None, on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        out: list[list[str]] = []
        step = batch_size or max(1, len(prompts))
        with self._with(adapters):
            for i in range(0, len(prompts), step):
                batch = prompts[i : i + step]
                out += self._batch(batch, sampling)
                if on_batch:
                    on_batch(len(batch))
        return out

    def _batch(self, prompts: list[str], sampling: Sampling) -> list[list[str]]:
        """All prompts (times their samples) as one left-padded batch; greedy computes one completion."""
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        sample = sampling.temperature > 0
        n = sampling.n if sample else 1
        torch.manual_seed(sampling.seed)
        with torch.no_grad():
            # Only ids and mask: a tokenizer may add token_type_ids, which transformers < 5 refuses in generate.
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 num_return_sequences=n, **_decoding(tok, sampling))
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        if not sample:
            return [[t] * sampling.n for t in texts]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]

    def stream(self, prompt: str, *, adapters: Sequence[Path] = (), sampling: Sampling) -> Iterator[str]:
        """Runs the generation in a thread; closing the iterator early (a client that went away)
        stops it at the next token, so the weights are free again at once."""
        import threading

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class Closed(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), closed.is_set(), dtype=torch.bool, device=input_ids.device)

        tok, model = self.lm.tokenizer, self.lm.model
        closed = threading.Event()
        with self._with(adapters):
            enc = tok([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
            kwargs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], streamer=streamer,
                          stopping_criteria=StoppingCriteriaList([Closed()]), **_decoding(tok, sampling))

            def run():
                torch.manual_seed(sampling.seed)
                with torch.no_grad():
                    model.generate(**kwargs)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            try:
                yield from streamer
            finally:
                closed.set()
                thread.join()

    def loglikelihood(self, items: Sequence[tuple[str, Sequence[str]]], *,
                      adapters: Sequence[Path] = ()) -> list[list[float]]:
        """Each context read once, its continuations packed after it (seal.core.packing)."""
        with self._with(adapters):
            return choice_logprobs(self.lm, [(c, list(xs)) for c, xs in items])

    def answer_logprob(self, prompt: str, answer: str, *, adapters: Sequence[Path] = ()) -> float:
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        with self._with(adapters):
            context = tok(prompt, add_special_tokens=False)["input_ids"]
            target = tok(answer, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + target], device=model.device)
            with torch.no_grad():
                logp = model(input_ids=ids).logits[0, len(context) - 1 : -1].float().log_softmax(-1)
        return float(logp.gather(1, torch.tensor(target, device=logp.device)[:, None]).sum())

    def perplexity(self, text: str, *, adapters: Sequence[Path] = (), window: int = 512) -> float:
        import torch

        ids = token_ids(self.lm.tokenizer, text)
        nll, count = 0.0, 0
        with self._with(adapters):
            for b in range(0, len(ids), window):
                chunk = torch.tensor([ids[b : b + window]], device=self.lm.model.device)
                if chunk.shape[1] < 2:
                    continue
                with torch.no_grad():
                    loss = self.lm.model(input_ids=chunk, labels=chunk).loss
                nll += float(loss) * (chunk.shape[1] - 1)
                count += chunk.shape[1] - 1
        return math.exp(nll / count)


@dataclass
class Call:
    prompts: list[str]
    adapters: tuple[Path, ...]
    sampling: Sampling | None  # None: a scoring call (loglikelihood, answer_logprob, perplexity)


class ScriptedGenerator:
    """Completions from `respond(prompt, sampling, adapters) -> str | list[str] | None` (a list gives
    the n completions; a string is repeated; None hands the prompt to `fallback`, e.g. the real
    model's generator), and log-probabilities from `score(context, continuation, adapters) -> float
    | None` (None, or no `score`: the fallback's); a scripted perplexity is exp(-score("", text) /
    words). Every call is recorded in `calls`. For tests: the code under test runs unchanged and
    only the text and scores it is given are scripted."""

    def __init__(self, respond: Callable[[str, Sampling, tuple[Path, ...]], str | list[str] | None],
                 fallback: Generator | None = None,
                 score: Callable[[str, str, tuple[Path, ...]], float | None] | None = None):
        self.respond = respond
        self.fallback = fallback
        self.score = score
        self.calls: list[Call] = []

    def generate(self, prompts: list[str], *, adapters: Sequence[Path] = (), sampling: Sampling,
                 batch_size: int | None = None, on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        chain = tuple(Path(a) for a in adapters)
        self.calls.append(Call(list(prompts), chain, sampling))
        out = []
        for p in prompts:
            r = self.respond(p, sampling, chain)
            if r is None:
                if self.fallback is None:
                    raise AssertionError(f"no scripted completion for {p[:60]!r}")
                r = self.fallback.generate([p], adapters=chain, sampling=sampling)[0]
            out.append(list(r) if isinstance(r, list) else [r] * sampling.n)
        if on_batch and prompts:
            on_batch(len(prompts))
        return out

    def stream(self, prompt: str, *, adapters: Sequence[Path] = (), sampling: Sampling) -> Iterator[str]:
        text = self.generate([prompt], adapters=adapters, sampling=sampling)[0][0]
        yield from (text[i : i + 4] for i in range(0, len(text), 4))

    def _scored(self, context: str, continuation: str, chain: tuple[Path, ...], fallback: Callable[[], float]) -> float:
        s = self.score(context, continuation, chain) if self.score else None
        if s is not None:
            return float(s)
        if self.fallback is None:
            raise AssertionError(f"no scripted score for {(context + continuation)[-60:]!r}")
        return fallback()

    def loglikelihood(self, items: Sequence[tuple[str, Sequence[str]]], *,
                      adapters: Sequence[Path] = ()) -> list[list[float]]:
        chain = tuple(Path(a) for a in adapters)
        self.calls.append(Call([c for c, _ in items], chain, None))
        def alone(c: str, x: str) -> float:
            return self.fallback.loglikelihood([(c, [x])], adapters=chain)[0][0]

        return [[self._scored(c, x, chain, lambda c=c, x=x: alone(c, x)) for x in xs] for c, xs in items]

    def answer_logprob(self, prompt: str, answer: str, *, adapters: Sequence[Path] = ()) -> float:
        chain = tuple(Path(a) for a in adapters)
        self.calls.append(Call([prompt], chain, None))
        return self._scored(prompt, answer, chain, lambda: self.fallback.answer_logprob(prompt, answer, adapters=chain))

    def perplexity(self, text: str, *, adapters: Sequence[Path] = (), window: int = 512) -> float:
        chain = tuple(Path(a) for a in adapters)
        self.calls.append(Call([text], chain, None))
        if self.score and (s := self.score("", text, chain)) is not None:
            return math.exp(-s / max(1, len(text.split())))
        if self.fallback is None:
            raise AssertionError(f"no scripted score for {text[:60]!r}")
        return self.fallback.perplexity(text, adapters=chain, window=window)
