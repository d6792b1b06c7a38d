"""The encoder stack and the sequence classifier on top of it.

    input_ids (B, T) --Embeddings--> (B, T, D) --n_layers x Block--> last hidden state (B, T, D)
    --pool--> (B, D) --pre_classifier, act, dropout--> (B, D) --classifier--> logits (B, C)

Both Hugging Face heads have this one shape: a D x D layer, a non-linearity, dropout, a D x C layer. They differ
in the non-linearity and in where the first layer comes from:
- DistilBERT (`DistilBertForSequenceClassification`): `pre_classifier` + ReLU, freshly initialised for the task.
- BERT (`BertForSequenceClassification`): the *pooler* (dense + tanh), shipped in the checkpoint (BERT trains it
  on next-sentence prediction; all-MiniLM-L6-v2's never was: its bias is exactly zero); minibert keeps it in the
  same `pre_classifier` slot.
So `Config.family` picks the activation, and checkpoint.py maps `bert.pooler.dense` onto `pre_classifier`.

Pooling: both heads read the first token, [CLS] (`pooling="cls"`, the parity path). all-MiniLM-L6-v2 was trained
as a sentence embedder with mean pooling over real tokens, so `pooling="mean"` may suit it better.

Two speed options, opt-in, beside the readable path rather than instead of it (parity with the default path in
tests/test_fast_paths.py); train.py turns them on with `--cls-only` and `--compile`:
- `set_cls_only(model)`: for a [CLS] classifier, a last layer that computes position 0 only. The head reads
  nothing else, so the other T-1 outputs of that layer are work thrown away (block.py `first_token`).
- `compile_model(model)`: torch.compile, in place, so parameter names and checkpoints stay as they are.
They are runtime switches, not architecture: they are not saved in config.json.
"""

import torch
from torch import nn

from .block import Block
from .config import Config
from .embeddings import Embeddings
from .hf_names import hf_encoder_module_name, hf_module_name

HEAD_ACTIVATIONS = {"distilbert": nn.ReLU, "bert": nn.Tanh}


class Encoder(nn.Module):
    """Token ids -> contextual vectors, one per token."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        init_weights(self, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                first_token_only: bool = False) -> torch.Tensor:
        """-> last hidden state (B, T, D); with `first_token_only`, the last layer computes position 0 only:
        (B, 1, D), all a [CLS] classifier reads (Block.first_token)."""
        check_inputs(input_ids, attention_mask)
        x = self.embeddings(input_ids)  # (B, T, D)
        n_full = len(self.layers) - 1 if first_token_only else len(self.layers)
        for layer in self.layers[:n_full]:
            x = layer(x, attention_mask)  # (B, T, D)
        if first_token_only:
            x = self.layers[-1].first_token(x, attention_mask)  # (B, 1, D)
        return x  # last hidden state (B, T, D), or (B, 1, D)

    def hf_module_name(self, path: str) -> str:
        """Our module path -> the bare checkpoint's (`BertModel`, ...); lora's adapter files use these names."""
        return hf_encoder_module_name(path, self.config)


class Classifier(nn.Module):
    """Encoder + pooling + head -> logits (B, C). Loaded by `minibert.load_classifier`."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.activation = HEAD_ACTIVATIONS[config.family]()
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        init_weights(self.pre_classifier, config)  # the encoder initialised itself
        init_weights(self.classifier, config)
        self.first_token_only = False  # opt-in fast path, see set_cls_only

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # BEGIN ASSIGNMENT head: cls: the vector of the [CLS] position; mean: the average over the real tokens only (no mask: no padding); (B, T, D) -> (B, D)
        if self.config.pooling == "cls":
            return hidden[:, 0]  # (B, D): the [CLS] vector
        if attention_mask is None:
            return hidden.mean(dim=1)  # (B, D)
        mask = attention_mask[:, :, None].to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B, D): mean of real tokens
        # END ASSIGNMENT

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, first_token_only=self.first_token_only)  # (B, T or 1, D)
        # BEGIN ASSIGNMENT head: the pooled vector through the head __init__ builds, in the order the module docstring draws; -> logits (B, C)
        pooled = self.activation(self.pre_classifier(self.pool(hidden, attention_mask)))  # (B, D)
        return self.classifier(self.dropout(pooled))  # logits (B, C)
        # END ASSIGNMENT

    def hf_module_name(self, path: str) -> str:
        """Our module path -> the checkpoint's (`*ForSequenceClassification`); lora's adapter files use these names."""
        return hf_module_name(path, self.config)


def set_cls_only(model: nn.Module, on: bool = True) -> nn.Module:
    """Let every [CLS] classifier inside `model` (a Classifier, or any module holding one, e.g. after lora.inject)
    compute its last layer at position 0 only; returns `model`. Refused for mean pooling, which reads every position
    of the last layer, and for a module with no Classifier inside (a bare encoder's caller may read them all)."""
    classifiers = [m for m in model.modules() if isinstance(m, Classifier)]
    if not classifiers:
        raise ValueError(f"set_cls_only needs a minibert Classifier inside {type(model).__name__}: it changes "
                         "what the last layer returns, which only a [CLS] head may ignore")
    if on and (pools := {m.config.pooling for m in classifiers} - {"cls"}):
        raise ValueError(f"set_cls_only needs pooling='cls'; this classifier pools {pools.pop()!r}, which "
                         "reads every position of the last layer")
    for m in classifiers:
        m.first_token_only = on
    return model


def compile_model(model: nn.Module, dynamic: bool = True, **options) -> nn.Module:
    """torch.compile `model` in place (nn.Module.compile) and return it.

    In place, unlike `torch.compile(model)`, which wraps the model and prefixes every state_dict key with
    `_orig_mod.`: checkpoints and LoRA names stay as they are. `dynamic=True` compiles once for any sequence
    length: with dynamic padding every batch has its own T, and a static graph would recompile for each.
    The first batches are slow (compilation: tens of seconds); `options` go to torch.compile (e.g. mode=...).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"compile_model needs an nn.Module, got {type(model).__name__}")
    model.compile(dynamic=dynamic, **options)
    return model


def check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Fail with a message rather than deep inside an embedding lookup."""
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be an integer tensor (batch, seq), "
                         f"got {input_ids.dtype} {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have input_ids' shape "
                         f"{tuple(input_ids.shape)}")


@torch.no_grad()
def init_weights(module: nn.Module, config: Config) -> None:
    """BERT's initialisation (Devlin et al. 2019): N(0, 0.02) weights, zero biases, LayerNorm = identity.

    Only used for random init; loading a checkpoint overwrites all of it. The padding row of the word embeddings
    is zeroed (its vector never matters: padding is masked) and a sinusoidal position table is left as built.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, config.initializer_range)
            m.bias.zero_()
        elif isinstance(m, nn.Embedding) and m.weight.requires_grad:
            m.weight.normal_(0.0, config.initializer_range)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
