"""The hand-written GPT that the path-star agents ran on before issue 21 (rotary positions,
pre-LayerNorm blocks): kept only as the reference of ``benchmarks/bench_gpt.py``'s step-time
ratio. The agents now run transformers' GPT-2 (:mod:`agents.gpt`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from agents.gpt import GPTConfig


def rotary_tables(length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos``, ``sin`` of rotary position angles, shape ``(length, head_dim // 2)``."""
    freq = 1.0 / (10_000 ** (torch.arange(0, head_dim // 2, dtype=torch.float32) * 2 / head_dim))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freq[None, :]
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` ``(B, heads, T, head_dim)`` (pairs of halves)."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half : 2 * half]
    rotated = [first * cos - second * sin, first * sin + second * cos, x[..., 2 * half :]]
    return torch.cat(rotated, dim=-1)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention (rotary positions on queries
    and keys when ``rotary``), then a 4x GELU MLP."""

    def __init__(self, d_model: int, n_head: int, rotary: bool = False) -> None:
        super().__init__()
        self.n_head = n_head
        self.rotary = rotary
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)
                   for t in (q, k, v))
        if self.rotary:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.ln2(x))


class GPTNet(nn.Module):
    """Token + position embeddings, ``n_layer`` causal blocks, a head over ``vocab_out``."""

    def __init__(self, vocab_in: int, vocab_out: int, max_len: int, config: GPTConfig) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_in, config.d_model)
        self.pos = nn.Embedding(max_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_head, rotary=True)
                                    for _ in range(config.n_layer))
        cos, sin = rotary_tables(max_len, config.d_model // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.ln = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, vocab_out)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab_out)`` for input tokens ``(B, T)``."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"input must hold at most {self.max_len} tokens, got {length}")
        x = self.tok(tokens) + self.pos(torch.arange(length, device=tokens.device))
        cos, sin = self.cos[:length], self.sin[:length]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.ln(x))
