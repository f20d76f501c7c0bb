"""The canary's packed choice scoring against scoring each question + choice on its own row.

    python benchmarks/canary_packing.py [--model PATH] [--repeats 2]

Both score all canary items on the same weights in one process, alternating, and the script
prints the seconds of each, their ratio, the tokens each feeds the model, and the largest
difference between their log-probabilities (they should agree to float rounding) with the
accuracy and margin each gives. Absolute seconds depend on the machine's load; the ratio is the
result.
"""

from __future__ import annotations

import argparse
import time


def plain_logprobs(lm, items, batch_size: int = 32) -> tuple[list[list[float]], int]:
    """Every (context, choice) pair on a row of its own, right-padded, in batches (the canary before packing)."""
    import torch

    tok, model = lm.tokenizer, lm.model
    start = tok("", add_special_tokens=True)["input_ids"]
    pairs = [(start + tok(c, add_special_tokens=False)["input_ids"], tok(x, add_special_tokens=False)["input_ids"])
             for c, xs in items for x in xs]
    flat, fed = [], 0
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b : b + batch_size]
        width = max(len(c) + len(x) for c, x in batch)
        fed += width * len(batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, (c, x) in enumerate(batch):
            ids[i, : len(c) + len(x)] = torch.tensor(c + x)
            attn[i, : len(c) + len(x)] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
        for i, (c, x) in enumerate(batch):
            flat.append(float(logp[i, torch.arange(len(c) - 1, len(c) + len(x) - 1), torch.tensor(x)].sum()))
    out, at = [], 0
    for _, xs in items:
        out.append(flat[at : at + len(xs)])
        at += len(xs)
    return out, fed


def summary(items, scores, answers) -> tuple[float, float]:
    right = [max(range(len(s)), key=s.__getitem__) == a for s, a in zip(scores, answers)]
    margins = [s[a] - max(x for j, x in enumerate(s) if j != a) for s, a in zip(scores, answers)]
    return sum(right) / len(right), sum(margins) / len(margins)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a local HF model folder (default: the embedded model)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from seal.core.models import load_model
    from seal.core.packing import choice_logprobs
    from seal.guard.canary import load_canary, scoring_items

    lm = load_model(args.model)
    canary = load_canary()
    items = scoring_items(canary)
    answers = [it.answer for it in canary]
    tok = lm.tokenizer
    packed_tokens = sum(1 + len(tok(c)["input_ids"]) + sum(len(tok(x)["input_ids"]) for x in xs) for c, xs in items)
    seconds = {"plain": [], "packed": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain, plain_fed = plain_logprobs(lm, items)
        seconds["plain"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        packed = choice_logprobs(lm, items)
        seconds["packed"].append(time.perf_counter() - t0)
    diff = max(abs(a - b) for p, q in zip(plain, packed) for a, b in zip(p, q))
    best = {k: min(v) for k, v in seconds.items()}
    print(f"{len(items)} items, {sum(len(xs) for _, xs in items)} choices")
    for name, scores, fed in (("plain", plain, plain_fed), ("packed", packed, packed_tokens)):
        acc, margin = summary(items, scores, answers)
        print(f"{name:7s} {best[name]:7.2f} s (best of {args.repeats})  ~{fed} tokens fed  accuracy {acc:.4f}  margin {margin:.4f}")
    print(f"plain / packed seconds: {best['plain'] / best['packed']:.2f}x; largest log-prob difference {diff:.2e}")


if __name__ == "__main__":
    main()
