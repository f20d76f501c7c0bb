"""Several sequences in one row: a shared prefix read once, then segments that each see the prefix
(or not) and themselves, at the positions they would have on a row of their own.

Used where many short sequences share a start: choices after their context (`choice_logprobs`,
the transformers backend's `loglikelihood`: the canary's answers, an ARC self-edit's options) and
a training step's packed examples after the chat template's system turn (`seal.core.inner_loop`).
The attention mask is 4D (one query row per token), which the eager and sdpa attention
implementations take; flash-attention-2 does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seal.core.models import LoadedModel


def packed_row(prefix: int, segments: list[tuple[int, bool]]):
    """Position ids [L] and the allowed-attention matrix [L, L] (bool, query x key) of one row of
    `prefix` tokens followed by segments of (length, sees the prefix): the prefix and each segment
    causal within themselves, a segment that sees the prefix placed after it, the others from 0."""
    import torch

    width = prefix + sum(n for n, _ in segments)
    positions = torch.zeros(width, dtype=torch.long)
    allowed = torch.zeros(width, width, dtype=torch.bool)
    positions[:prefix] = torch.arange(prefix)
    allowed[:prefix, :prefix] = torch.ones(prefix, prefix, dtype=torch.bool).tril()
    at = prefix
    for n, sees in segments:
        span = slice(at, at + n)
        start = prefix if sees else 0
        positions[span] = torch.arange(start, start + n)
        allowed[span, span] = torch.ones(n, n, dtype=torch.bool).tril()
        allowed[span, :prefix] = sees
        at += n
    return positions, allowed


def additive_mask(allowed, dtype):
    """A bool allowed-attention tensor [..., L, L] as the additive 4D mask the model takes
    ([batch, 1, L, L]: 0 where allowed, the dtype's minimum elsewhere)."""
    import torch

    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None] if mask.dim() == 2 else mask[:, None]


def token_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def choice_logprobs(lm: LoadedModel, items: list[tuple[str, list[str]]], batch_size: int = 16) -> list[list[float]]:
    """For each (context, choices) item, the sum of log p(choice tokens | context) of every choice.

    The context is read once per item: its choices are packed after it in one row, each choice
    attending to the context and to itself only (a block mask) and placed at the positions it
    would have alone, so the scores equal scoring each context + choice on its own row while the
    model reads about a third of the tokens. Rows are sorted by length to waste little padding."""
    import torch

    tok, model = lm.tokenizer, lm.model
    start = tok("", add_special_tokens=True)["input_ids"]
    encoded = [(start + token_ids(tok, c), [token_ids(tok, x) for x in xs]) for c, xs in items]
    out: list[list[float]] = [[] for _ in items]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    dtype = next(model.parameters()).dtype
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + sum(map(len, encoded[i][1])))
    for b in range(0, len(order), batch_size):
        rows = [encoded[i] for i in order[b : b + batch_size]]
        width = max(len(c) + sum(map(len, xs)) for c, xs in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        positions = torch.zeros_like(ids)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # padding sees itself only
        for r, (c, xs) in enumerate(rows):
            pos, allow = packed_row(len(c), [(len(x), True) for x in xs])
            n = len(pos)
            ids[r, :n] = torch.tensor(c + [t for x in xs for t in x])
            positions[r, :n] = pos
            allowed[r, :n, :n] = allow
        mask = additive_mask(allowed, dtype)
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                           position_ids=positions.to(model.device)).logits
        for r, (c, xs) in enumerate(rows):
            at = len(c)
            for x in xs:
                # the first choice token is predicted from the context's last position, the rest from their own;
                # normalised at those positions only, not over every position of every row
                before = torch.tensor([len(c) - 1] + list(range(at, at + len(x) - 1)), device=logits.device)
                logp = torch.log_softmax(logits[r, before].float(), -1)
                out[order[b + r]].append(float(logp[torch.arange(len(x)), torch.tensor(x)].sum()))
                at += len(x)
    return out
