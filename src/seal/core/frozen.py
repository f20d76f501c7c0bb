"""Training LoRA on the top layers only, without recomputing the frozen layers below them.

With adapters on the top N decoder layers (`InnerLoopConfig.lora_layers`), every layer below is
frozen during a learn, so a sequence's hidden state where the trained layers begin is the same at
every epoch. `TopLayers` stands in for the model in the training step: it computes that hidden
state once per distinct row (no grad), keeps it, and runs only the top layers, the final norm and
the output layer on it, so the loss and its gradient are those of the whole model while each
epoch after the first reads the lower layers not at all and backpropagates through the top only.

It works on decoder-only models whose base holds `embed_tokens`, a `layers` list and a final
`norm` (Llama, Mistral, Qwen, SmolLM and most others in transformers): the base is called on the
lower layers alone (the norm left out) and the whole model on the top layers alone, fed the kept
hidden state as its input embeddings, with the same attention mask and positions.
"""

from __future__ import annotations

from contextlib import contextmanager


def decoder_base(model):
    """The module that holds the decoder layers (`layers`), with `embed_tokens` and `norm`."""
    for module in model.modules():
        if all(hasattr(module, a) for a in ("layers", "embed_tokens", "norm")):
            return module
    raise ValueError("lora_layers needs a decoder whose base module holds embed_tokens, layers and norm")


def layer_count(model) -> int:
    return len(decoder_base(model).layers)


class TopLayers:
    """Called like the model (input_ids, attention_mask, position_ids, labels); the lower
    `len(layers) - top` layers' output for each distinct row is computed once and kept (memory:
    one hidden state per row trained in the learn)."""

    def __init__(self, model, top: int):
        self.model = model
        self.base = decoder_base(model)
        self.split = len(self.base.layers) - top
        self.kept: dict = {}

    def parameters(self):
        return self.model.parameters()

    @contextmanager
    def _only(self, layers, norm: bool):
        import torch

        saved_layers, saved_norm = self.base.layers, self.base.norm
        self.base.layers = torch.nn.ModuleList(layers)
        if not norm:
            self.base.norm = torch.nn.Identity()
        try:
            yield
        finally:
            self.base.layers, self.base.norm = saved_layers, saved_norm

    def lower(self, input_ids, attention_mask=None, position_ids=None):
        """The hidden state entering the first trained layer (kept per distinct row)."""
        import torch

        key = tuple(None if t is None else (tuple(t.shape), t.cpu().numpy().tobytes())
                    for t in (input_ids, attention_mask, position_ids))
        if key not in self.kept:
            with torch.no_grad(), self._only(list(self.base.layers)[: self.split], norm=False):
                self.kept[key] = self.base(input_ids=input_ids, attention_mask=attention_mask,
                                           position_ids=position_ids, use_cache=False).last_hidden_state
        return self.kept[key]

    def __call__(self, input_ids, attention_mask=None, position_ids=None, labels=None):
        hidden = self.lower(input_ids, attention_mask, position_ids)
        with self._only(list(self.base.layers)[self.split :], norm=True):
            return self.model(inputs_embeds=hidden, attention_mask=attention_mask, position_ids=position_ids,
                              labels=labels, use_cache=False)
