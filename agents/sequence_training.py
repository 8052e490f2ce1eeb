"""The training loop shared by the neural next-token learners (:mod:`agents.gpt`,
:mod:`agents.hf_lm`): AdamW with decoupled weight decay on matrices only, linear warm-up
then cosine decay to ``lr / 10``, gradient clipping, batches drawn without replacement."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Schedule", "learning_rate", "train_next_token"]


@dataclass(frozen=True)
class Schedule:
    """Optimiser settings of one training run."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup: int
    grad_clip: float


def learning_rate(step: int, schedule: Schedule) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``lr / 10``."""
    if step < schedule.warmup:
        return schedule.lr * (step + 1) / schedule.warmup
    progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
    return schedule.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def train_next_token(
    model: nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    schedule: Schedule,
    generator: torch.Generator,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Minimise the mean token log loss of ``logits_of(inputs[rows])`` (``(B, H, V)``)
    against ``targets[rows]`` (``(B, H)``) over ``model``'s parameters; returns the loss of
    every step (``callback(step, loss)`` after each)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    keep = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": schedule.weight_decay},
                             {"params": keep, "weight_decay": 0.0}], lr=schedule.lr,
                            betas=(0.9, 0.98))
    n = len(targets)
    batch = min(schedule.batch_size, n)
    order = torch.randperm(n, generator=generator)
    cursor, losses = 0, []
    for step in range(schedule.steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        rows = order[cursor : cursor + batch].to(inputs.device)
        cursor += batch
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, schedule)
        logits = logits_of(inputs[rows])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[rows].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    return losses
