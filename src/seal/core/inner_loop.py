"""The inner loop: supervised fine-tuning of a LoRA adapter on (prompt, completion) records.

One training loop serves both the inner loop (a self-edit's sequences, prompt empty) and the
generator's SFT in ReST-EM (prompt = self-edit prompt, completion = the kept self-edit). The
loss covers completion tokens only, never the prompt and never padding.

Adapters are values: `lora_adapter` owns a trial's adapter and removes it on exit, so the loaded
base model is bit-identical after every trial; `save_adapter` (seal.core.adapters, which owns the
adapter file format) keeps it.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from seal.core.adapters import applied_adapters, save_adapter
from seal.core.config import InnerLoopConfig
from seal.core.frozen import TopLayers, layer_count
from seal.core.packing import additive_mask, packed_row
from seal.core.runtime import RuntimeFailure, SealError, UsageError

IGNORE = -100


@dataclass
class TrainExample:
    """One training record; the loss covers `completion` only."""

    completion: str
    prompt: str = ""


@dataclass
class Rehearsal:
    """A pool of examples rehearsed beside the new ones: each epoch trains on a fresh seeded
    sample of `per_epoch` of them (all of them when the pool is smaller), so over the epochs the
    adapter sees much of the pool at the cost of a few examples per epoch."""

    pool: list[TrainExample]
    per_epoch: int
    # Loss weight of these examples relative to the new ones (1.0: the same).
    weight: float = 1.0
    # Distillation targets, one per pool example (None: plain cross-entropy on the completion):
    # the teacher's top-k next-token (ids, log-probs) at every position of the tokenized example,
    # trained as KL(teacher || model) over every position (prompt included), see `kl_to_teacher`.
    teacher: list | None = None

    @property
    def sampled(self) -> int:
        """How many of the pool each epoch trains on."""
        return min(self.per_epoch, len(self.pool))

    def sample_indices(self, seed: int, epoch: int, index: int) -> list[int]:
        import random

        k = self.sampled
        return random.Random(f"{seed}/{epoch}/{index}").sample(range(len(self.pool)), k) if k else []

    def sample(self, seed: int, epoch: int, index: int) -> list[TrainExample]:
        return [self.pool[i] for i in self.sample_indices(seed, epoch, index)]


@dataclass
class TrainResult:
    steps: int
    n_examples: int
    n_tokens: int  # completion tokens that carried loss, summed over epochs
    train_seconds: float
    losses: list[float] = field(default_factory=list)  # one per optimiser step
    epochs: int = 0  # epochs run (fewer than configured when cfg.stop_loss or cfg.stop_recalled stopped it)
    # per epoch, the mean loss of the new examples alone (rehearsed ones excluded): what they recall.
    # With batch_size > 1 a batch's loss counts once for each new example in it (with mix_rehearsal
    # each new example's own loss).
    new_losses: list[float] = field(default_factory=list)
    # with cfg.stop_recalled, per epoch, the share of new examples recalled at its end (`recalled`)
    recalled: list[float] = field(default_factory=list)
    input_tokens: int = 0  # every token the training steps read (prompts, rehearsal, padding excluded), over epochs


def tokenize_example(tokenizer, ex: TrainExample, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels: the tokenizer's own start tokens, prompt (masked), completion + EOS."""
    start = tokenizer("", add_special_tokens=True)["input_ids"]
    prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
    completion = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion = completion + [tokenizer.eos_token_id]
    ids = (start + prompt + completion)[:max_len]
    labels = ([IGNORE] * (len(start) + len(prompt)) + completion)[:max_len]
    return ids, labels


def teacher_topk(model, ids_list: list[list[int]], k: int) -> list[tuple]:
    """The model's top-k next-token ids and log-probs at every position of each token sequence,
    as it is now (call it with the weights the student must stay close to): [(ids [L, k] int64,
    log-probs [L, k] float32)], position t predicting token t + 1 (the last predicts past the end)."""
    import torch

    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for ids in ids_list:
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            top = logp.topk(min(k, logp.shape[-1]), dim=-1)
            out.append((top.indices.cpu(), top.values.cpu()))
    return out


def kl_to_teacher(logits, teacher: tuple, length: int):
    """KL(teacher || model) per position, averaged over the first `length` - 1 positions (those
    that predict a token of the sequence), on the teacher's top-k plus one bucket for the rest of
    the vocabulary: exact for the distributions coarsened to those k + 1 outcomes. A teacher of
    three parts carries per-position weights (`focused_teacher`): then a weighted mean."""
    import torch

    t_ids, t_logp = (x.to(logits.device) for x in teacher[:2])
    n = min(length - 1, t_ids.shape[0], logits.shape[0])
    s_logp = torch.log_softmax(logits[:n].float(), -1)
    s_top = s_logp.gather(-1, t_ids[:n])
    t_top = t_logp[:n]
    t_rest = torch.log1p(-t_top.exp().sum(-1).clamp(max=1 - 1e-6))
    s_rest = torch.log1p(-s_top.exp().sum(-1).clamp(max=1 - 1e-6))
    kl = (t_top.exp() * (t_top - s_top)).sum(-1) + t_rest.exp() * (t_rest - s_rest)
    if len(teacher) > 2:
        w = teacher[2][:n].to(kl.device)
        return (w * kl).sum() / w.sum()
    return kl.mean()


def focused_teacher(teacher: tuple, labels: list[int], focus: float) -> tuple:
    """The teacher (ids, log-probs) with a weight per position for `kl_to_teacher`: 1, plus
    `focus` * exp(-margin) where the position predicts a completion token (labels), margin being
    the teacher's log-prob lead of its first choice over its second there. So the tokens the
    teacher picks by a hair, which an update flips first, weigh up to 1 + focus; the weights are
    normalised, so the example's total loss scale stays that of a plain mean."""
    import torch

    ids, logp = teacher
    if logp.shape[-1] < 2:
        return teacher
    margin = logp[:, 0] - logp[:, 1]
    predicts = torch.zeros(logp.shape[0], dtype=torch.bool)
    answer = [i for i, lab in enumerate(labels[1:]) if lab != IGNORE and i < logp.shape[0]]
    predicts[answer] = True
    return ids, logp, 1.0 + focus * torch.exp(-margin) * predicts


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-pad a batch; padded positions get attention 0 and label IGNORE."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return input_ids, attention, labels


def steps_per_epoch(n_new: int, n_rehearsed: int, cfg: InnerLoopConfig) -> int:
    """Optimiser steps in one epoch of `n_new` new and `n_rehearsed` rehearsed examples."""
    return math.ceil((n_new + (0 if cfg.mix_rehearsal else n_rehearsed)) / cfg.batch_size)


def train(
    model,
    tokenizer,
    examples: list[TrainExample],
    cfg: InnerLoopConfig,
    seed: int,
    on_step: Callable[[int, int, float], None] | None = None,
    rehearsal: tuple[Rehearsal, ...] = (),
) -> TrainResult:
    """AdamW with linear decay to zero over `cfg.epochs` passes; trains whatever requires grad.
    Each epoch also trains on a fresh sample of every rehearsal pool (`Rehearsal`): in steps of
    their own, or with `cfg.mix_rehearsal` packed into the new examples' steps (`_epoch_batches`).

    With `cfg.stop_loss`, training ends after the first epoch whose new examples' mean loss is below
    it (rehearsed examples are not counted: their loss says nothing about the new data): going on
    until the loss is ~0.001 buys no recall and costs general ability (SEAL.md section 7). With
    `cfg.stop_recalled`, it ends after the first epoch at whose end every new example with a prompt
    (every new example, when none has one) is recalled (`recalled`), the point past which more
    epochs cannot change what greedy decoding returns for the training prompts themselves."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    data = [(*tokenize_example(tokenizer, ex, cfg.max_seq_len), 1.0, None) for ex in examples]
    # What stop_recalled checks: the examples with a prompt (question -> answer pairs) when there are
    # any; a raw passage of 200 words is rarely reproduced token for token, and users ask questions.
    asked = [x for x, ex in zip(data, examples) if ex.prompt] or data
    extra = sum(r.sampled for r in rehearsal)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (no adapter attached?)")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = steps_per_epoch(len(data), extra, cfg) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    order_rng = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    result = TrainResult(steps=0, n_examples=len(data), n_tokens=0, train_seconds=0.0)
    start = time.perf_counter()
    # LoRA on the top layers only: the frozen layers below are read once per row, not every epoch
    forward = TopLayers(model, cfg.lora_layers) if cfg.lora_layers and cfg.lora_layers < layer_count(model) else model
    model.train()
    try:
        for epoch in range(cfg.epochs):
            rehearsed = [(*tokenize_example(tokenizer, r.pool[j], cfg.max_seq_len), r.weight,
                          r.teacher[j] if r.teacher is not None else None)
                         for i, r in enumerate(rehearsal) for j in r.sample_indices(seed, epoch, i)]
            new_loss, new_count = 0.0, 0
            for items, n_new in _epoch_batches(data, rehearsed, cfg, order_rng):
                if cfg.mix_rehearsal:
                    losses = _packed_losses(forward, items, device)
                    batch_loss = torch.stack(losses).mean()
                    new_part = float(sum(x.detach() for x in losses[:n_new]))  # each new example's own loss
                else:
                    ids, attn, labels = collate([(x[0], x[1]) for x in items], pad)
                    batch_loss = _batch_loss(forward, ids.to(device), attn.to(device), labels.to(device), items)
                    new_part = float(batch_loss.detach()) * n_new  # the batch's mean, once per new example in it
                loss = float(batch_loss.detach())
                if not math.isfinite(loss):  # diverged: stop before the step spreads it into the weights
                    raise RuntimeFailure(
                        f"training diverged: the loss is {loss} at step {result.steps + 1} of {total} "
                        f"(learning rate {cfg.lr:g}; try a lower --lr); nothing was kept"
                    )
                batch_loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                result.steps += 1
                result.n_tokens += sum(sum(x != IGNORE for x in lab[1:]) for _, lab, _, _ in items)
                result.input_tokens += sum(len(x[0]) for x in items)
                result.losses.append(loss)
                new_loss, new_count = new_loss + new_part, new_count + n_new
                if on_step:
                    on_step(result.steps, total, result.losses[-1])
            result.epochs += 1
            result.new_losses.append(new_loss / new_count)
            if cfg.stop_recalled:
                result.recalled.append(sum(recalled(model, asked, device)) / len(asked))
            if result.epochs < cfg.min_epochs:
                continue
            if cfg.stop_loss is not None and result.new_losses[-1] < cfg.stop_loss:
                break
            if cfg.stop_recalled and result.recalled[-1] == 1.0:
                break
    finally:
        model.eval()
        result.train_seconds = time.perf_counter() - start
    return result


def recalled(model, data: list, device, batch: int = 8) -> list[bool]:
    """For each tokenized example (ids, labels, ...), whether the model's greedy next token equals the
    label at every labelled position: then greedy decoding from its prompt reproduces its completion.
    One no-grad forward pass, the examples right-padded in batches; dropout off meanwhile."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for b in range(0, len(data), batch):
                items = data[b : b + batch]
                ids, attn, labels = collate([(x[0], x[1]) for x in items], 0)
                logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
                guess, target = logits[:, :-1].argmax(-1), labels[:, 1:].to(device)
                labelled = target != IGNORE
                out += ((guess == target) | ~labelled).all(-1).tolist()
    finally:
        model.train(was_training)
    return out


def _epoch_batches(data: list, rehearsed: list, cfg: InnerLoopConfig, order_rng) -> list[tuple[list, int]]:
    """One epoch's optimiser steps, as (examples, how many of them are new).

    Default: the new and the rehearsed examples shuffled together and cut into batches. With
    `cfg.mix_rehearsal`: one step per batch of shuffled new examples (first in the step), the
    shuffled rehearsed ones dealt out over those steps in turn."""
    import torch

    size = cfg.batch_size
    if not cfg.mix_rehearsal:
        pool = data + rehearsed
        order = torch.randperm(len(pool), generator=order_rng).tolist()
        return [([pool[i] for i in order[b : b + size]], sum(i < len(data) for i in order[b : b + size]))
                for b in range(0, len(order), size)]
    new = torch.randperm(len(data), generator=order_rng).tolist()
    old = torch.randperm(len(rehearsed), generator=order_rng).tolist()
    steps = [new[b : b + size] for b in range(0, len(new), size)]
    return [([data[i] for i in s] + [rehearsed[j] for j in old[k :: len(steps)]], len(s)) for k, s in enumerate(steps)]


def shared_prefix(seqs: list[list[int]]) -> list[int]:
    """The token prefix that the sequences starting with the most common first token share (the
    chat template's system turn, for instance), shorter than each of them; [] when fewer than two
    share a first token."""
    from collections import Counter

    starts = Counter(x[0] for x in seqs if x).most_common(1)
    group = [x for x in seqs if x and starts and x[0] == starts[0][0]]
    if len(group) < 2:
        return []
    n = min(len(x) for x in group) - 1
    for i in range(n):
        if any(x[i] != group[0][i] for x in group):
            return group[0][:i]
    return group[0][:n]


def _packed_losses(model, items, device) -> list:
    """Each example's loss (cross-entropy on its completion, or KL to its teacher) times its
    weight, with the examples packed into one row: the prefix most of them share (`shared_prefix`)
    once at the start, then each example's own tokens at the positions they would have alone,
    attending to that prefix (when they begin with it) and to themselves only. The losses, and the
    gradients of their sum, equal training each example on a row of its own, while the model reads
    each shared prefix once and runs its matrix products on one longer row (faster on a CPU)."""
    import torch

    seqs = [x[0] for x in items]
    prefix = shared_prefix(seqs)
    shares = [bool(prefix) and len(x) > len(prefix) and x[: len(prefix)] == prefix for x in seqs]
    own = [x[len(prefix) :] if sh else x for x, sh in zip(seqs, shares)]
    positions, allowed = packed_row(len(prefix), [(len(x), sh) for x, sh in zip(own, shares)])
    ids = torch.tensor(prefix + [t for x in own for t in x], device=device)[None]
    mask = additive_mask(allowed, next(model.parameters()).dtype)
    logits = model(input_ids=ids, attention_mask=mask.to(device), position_ids=positions.to(device)[None]).logits[0]
    ends = list(itertools.accumulate(map(len, own), initial=len(prefix)))
    spans = [slice(a, b) for a, b in zip(ends, ends[1:])]
    return [_example_loss(torch.cat([logits[: len(prefix)], logits[span]]) if sh else logits[span],
                          torch.tensor(labels, device=device), len(tok_ids), w, teacher)
            for (tok_ids, labels, w, teacher), span, sh in zip(items, spans, shares)]


def _example_loss(logits, labels, length: int, weight: float, teacher):
    """One example's loss from its logits [L, V] (position t predicting token t + 1): KL to its
    teacher, or cross-entropy on its labelled (completion) tokens; times its weight."""
    import torch

    if teacher is not None:
        return kl_to_teacher(logits, teacher, length) * weight
    return torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE) * weight


def _batch_loss(model, ids, attn, labels, items):
    """The loss of one batch: the model's own token-mean cross-entropy when every example is plain
    with weight 1 (the default recipe, unchanged); else each example's loss (cross-entropy on its
    completion, or KL to its teacher) times its weight, averaged over the batch."""
    import torch

    if all(w == 1.0 and t is None for _, _, w, t in items):
        return model(input_ids=ids, attention_mask=attn, labels=labels).loss
    logits = model(input_ids=ids, attention_mask=attn).logits
    return torch.stack([_example_loss(logits[i], labels[i], len(tok_ids), w, teacher)
                        for i, (tok_ids, _, w, teacher) in enumerate(items)]).mean()


def _lora_config(cfg: InnerLoopConfig, n_layers: int):
    from peft import LoraConfig

    top = cfg.lora_layers if cfg.lora_layers and cfg.lora_layers < n_layers else None
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **({"layers_to_transform": list(range(n_layers - top, n_layers))} if top else {}),
    )


def check_target_modules(model, modules) -> None:
    """Refuse LoRA target names the model has no module for (PEFT's rule: a module's full name or its
    last dotted parts), before anything is written: PEFT itself says so only when the adapter is
    attached, after a learn has created its store and written its self-edits."""
    import torch

    names = [n for n, _ in model.named_modules()]
    missing = [m for m in modules if not any(n == m or n.endswith("." + m) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)})
        raise UsageError(f"target modules {', '.join(missing)} not found in the model (its linear layers: {', '.join(linear)})")


@contextmanager
def lora_adapter(model, cfg: InnerLoopConfig, seed: int) -> Iterator[object]:
    """Attach a fresh LoRA adapter (initialised from `seed`) and remove it on exit.

    Yields the PEFT model to train and query. The base weights never receive gradients, and
    on exit the original modules are put back, so the model is bit-identical to before.
    """
    import torch
    from peft import get_peft_model

    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    torch.manual_seed(seed)
    try:
        peft_model = get_peft_model(model, _lora_config(cfg, layer_count(model) if cfg.lora_layers else 0))
    except ValueError as e:
        raise SealError(f"cannot attach LoRA to {list(cfg.target_modules)}: {str(e).splitlines()[0]}") from e
    try:
        yield peft_model
    finally:
        peft_model.unload()  # remove the LoRA layers without merging them
        if hasattr(model, "peft_config"):
            del model.peft_config
        for n, p in model.named_parameters():
            p.requires_grad_(grad_flags.get(n, p.requires_grad))


def run_inner_loop(
    model,
    tokenizer,
    examples: list[TrainExample],
    cfg: InnerLoopConfig,
    seed: int,
    evaluate: Callable[[], object],
    keep: Path | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    rehearsal: tuple[Rehearsal, ...] = (),
    on: Sequence[Path] = (),
) -> tuple[TrainResult, object]:
    """The paper's inner loop, once: a fresh LoRA adapter (seeded), trained on a self-edit's
    examples on top of the stored adapters `on` (a head's or a generator's chain, oldest first),
    the adapted model evaluated by `evaluate()` (it sees the chain and the adapter), then the
    adapter saved to `keep` (a version or a generator link) or discarded. The chain's deltas are
    in the weights for the call only (the one place outside the backend that applies them: the
    adapter trains through them). Returns the training result and the evaluation's."""
    with applied_adapters(model, list(on)), lora_adapter(model, cfg, seed) as peft_model:
        result = train(peft_model, tokenizer, examples, cfg, seed, on_step=on_step, rehearsal=rehearsal)
        evaluation = evaluate()
        if keep is not None:
            save_adapter(peft_model, keep)
    return result, evaluation
