"""Embeddings: token ids -> vectors that know which word and where it stands.

    x = LayerNorm(word[input_ids] + position[0..T-1] (+ token_type[0])),  then dropout

Self-attention is blind to order (it is a weighted sum over a set), so position must be added to each token's
vector. BERT and DistilBERT learn one vector per position (max 512); DistilBERT can instead use the fixed
sin/cos table of "Attention Is All You Need" (section 3.5). BERT adds a third table, token types (sentence A
or B, for pair tasks); a single review is all sentence A, so we add row 0 to every token.

Mirrors transformers' DistilBERT/BERT embeddings (LayerNorm eps 1e-12); parity in tests/test_model_parity.py (the
whole model) and tests/assignments/test_09_embeddings.py (this module alone).
"""

import torch
from torch import nn

from .config import Config


def sinusoidal_table(n_positions: int, dim: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(pos / 10000^(2i/dim)); (n_positions, dim).

    Computed in float64 and rounded once to float32, as transformers does (through numpy).
    """
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    wavelength = torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    angles = position / wavelength  # (P, dim/2)
    table = torch.empty(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


class Embeddings(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        if config.sinusoidal_pos_embds:
            # A fixed table, not learned: stored as a weight (so checkpoints carry it) but frozen.
            self.position_embeddings.weight.data.copy_(sinusoidal_table(config.max_position_embeddings, config.dim))
            self.position_embeddings.weight.requires_grad_(False)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.dim) if config.type_vocab_size > 0 else None
        )
        self.LayerNorm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)  # checkpoint's capitalisation
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"input has {T} tokens but the model knows only {self.position_embeddings.num_embeddings} "
                "positions: truncate (e.g. tokenizer max_length)"
            )
        # With token types (BERT), every token is "sentence A", and its row is added before the positions, in
        # BERT's order: float addition is not associative, and the other order drifts by ~1e-5 after six layers of
        # a real model.
        # BEGIN ASSIGNMENT embeddings: BERT's input representation: each token's word vector, (its token-type row, when the model has them,) and its position's vector, summed in the order the comment above says, normalised, then dropout; (B, T) -> (B, T, D)
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids)  # (B, T, D)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]  # (B, T, D) + (D,)
        x = x + self.position_embeddings(positions)  # (B, T, D) + (T, D)
        return self.dropout(self.LayerNorm(x))  # (B, T, D)
        # END ASSIGNMENT
