"""Several sequences in one row: a shared prefix read once, then segments that each see the prefix
(or not) and themselves, at the positions they would have on a row of their own.

Used where many short sequences share a start: the canary's choices after their question
(`seal.guard.canary`) and a training step's packed examples after the chat template's system turn
(`seal.core.inner_loop`). The attention mask is 4D (one query row per token), which the eager and
sdpa attention implementations take; flash-attention-2 does not.
"""

from __future__ import annotations


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
