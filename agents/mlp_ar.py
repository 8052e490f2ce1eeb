"""``mlp-ar``: a shallow MLP next-token predictor on the one-hot encoding of the full context.

Malach 2023's MLP, written for one sequence task: every context token is embedded by a
shared table ``e`` (a linear map of its one-hot), and at position ``h``

``u_h = relu(sum_{j < L + h} M_{h,j} e(c_j) + b_h)``,  ``v_h = relu(A u_h + a)``,
``logits_h = B v_h + d_h``

with one first-layer block ``M_{h,j}`` per (position, context position) pair (Malach's
masked linear layer), ``A``, ``B`` shared and a per-position output bias ``d_h``. Trained
with torch by AdamW (cosine learning-rate decay to 0; decoupled weight decay
``weight_decay`` on the three weight matrices, none on biases and the embedding) on the
teacher-forced token log loss (next-token prediction), in minibatches of sequences, for
``epochs`` passes over the demonstrations; the output biases start at the log target
frequencies of each position (add-1/V smoothed). The defaults (40 epochs, weight decay 1)
are the ones that generalise on 2 x 2 multiplication: without weight decay the MLP
memorises the training pairs (held-out accuracy 0.68 to 0.85 there, 0.98 with it).

Two reductions, decided from the training data and exact on it: a context position whose
token never varies (the CoT's separators, place values) carries no information and is not
an input (its effect is a constant absorbed by ``b_h``); a position whose target never
varies is predicted by its bias ``d_h`` alone (no hidden units). The remaining inputs and
outputs are ``inputs`` and ``outputs`` of the saved policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.base import Agent, FittedPolicy, register_policy_kind
from agents.context_models import ContextModel, ContextOneHot, training_sequences
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

PARAMETERS = ("embed", "first", "first_bias", "layer2_weight", "layer2_bias", "out_weight",
              "bias")


class _Net(nn.Module):
    """The MLP over the varying context positions ``inputs``, for the varying targets
    ``outputs``; ``forward`` gives the logits ``(B, H, V)`` of every position."""

    def __init__(self, input_vocab: int, inputs: IntArray, outputs: IntArray, prompt_length: int,
                 horizon: int, vocab: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.inputs, self.outputs = np.asarray(inputs), np.asarray(outputs)
        self.embed_dim, self.hidden = embed_dim, hidden
        width = len(inputs) * embed_dim
        self.embed = nn.Embedding(input_vocab, embed_dim)
        self.first = nn.Parameter(torch.randn(width, len(outputs) * hidden) / np.sqrt(max(width,
                                                                                         1)))
        self.first_bias = nn.Parameter(torch.zeros(len(outputs), hidden))
        self.layer2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, vocab, bias=False)
        self.bias = nn.Parameter(torch.zeros(horizon, vocab))
        # output position h sees input position j only if j < L + h (the past)
        seen = self.inputs[:, None] < prompt_length + self.outputs[None, :]  # (J, O)
        mask = np.repeat(np.repeat(seen, embed_dim, axis=0), hidden, axis=1)
        self.register_buffer("mask", torch.from_numpy(mask.astype(np.float32)))

    def hidden_logits(self, tokens: torch.Tensor, block: slice) -> torch.Tensor:
        """Network logits ``(B, O_block, V)`` of the output positions ``outputs[block]``."""
        x = self.embed(tokens).reshape(len(tokens), -1)
        columns = slice(block.start * self.hidden, block.stop * self.hidden)
        first = self.first[:, columns] * self.mask[:, columns]
        u = (x @ first).view(len(tokens), -1, self.hidden) + self.first_bias[block]
        return self.out(torch.relu(self.layer2(torch.relu(u))))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.bias.expand(len(tokens), *self.bias.shape).clone()
        if len(self.outputs):
            index = torch.from_numpy(self.outputs)
            logits[:, index] += self.hidden_logits(tokens, slice(0, len(self.outputs)))
        return logits

    def _tensors(self) -> list[torch.Tensor]:
        return [self.embed.weight, self.first, self.first_bias, self.layer2.weight,
                self.layer2.bias, self.out.weight, self.bias]

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: t.detach().numpy().astype(np.float64)
                for name, t in zip(PARAMETERS, self._tensors(), strict=True)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, t in zip(PARAMETERS, self._tensors(), strict=True):
                value = np.asarray(arrays[name])
                if value.shape != tuple(t.shape) or not np.isfinite(value).all():
                    raise ValueError(f"saved {name} must be finite with shape {tuple(t.shape)}")
                t.copy_(torch.from_numpy(value.astype(np.float32)))


def _varying(values: IntArray) -> IntArray:
    """Columns of ``values`` that take more than one value."""
    return np.flatnonzero((values != values[:1]).any(axis=0)) if len(values) else np.arange(0)


@register_policy_kind
class MLPARPolicy(FittedPolicy):
    """The fitted MLP (arrays: its input and output positions and its parameters)."""

    kind = "mlp_ar"

    def __init__(self, task: SequenceTask, net: _Net, info: dict[str, Any] | None = None
                 ) -> None:
        self.encoding = ContextOneHot.of(task)
        width = self.encoding.prompt_length + task.horizon - 1
        if net.inputs.size and (net.inputs.min() < 0 or net.inputs.max() >= width):
            raise ValueError(f"inputs must be context positions in [0, {width - 1}]")
        if net.outputs.size and (net.outputs.min() < 0 or net.outputs.max() >= task.horizon):
            raise ValueError(f"outputs must be positions in [0, {task.horizon - 1}]")
        self.net = net.eval()
        self._slot = {int(h): k for k, h in enumerate(net.outputs)}
        super().__init__(task, ContextModel(self.encoding, task.vocab_size, self._logits), info)

    def _logits(self, h: int, active: IntArray) -> FloatArray:
        context = active - np.arange(active.shape[1]) * self.encoding.input_vocab
        inputs = self.net.inputs
        tokens = np.zeros((len(context), len(inputs)), dtype=np.int64)
        past = inputs < context.shape[1]  # later positions are masked out (any token will do)
        tokens[:, past] = context[:, inputs[past]]
        with torch.no_grad():
            logits = self.net.bias[h].expand(len(context), -1)
            if h in self._slot:
                k = self._slot[h]
                logits = logits + self.net.hidden_logits(torch.from_numpy(tokens),
                                                         slice(k, k + 1))[:, 0]
        return logits.detach().double().numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"inputs": self.net.inputs.astype(np.int64),
                "outputs": self.net.outputs.astype(np.int64), **self.net.arrays()}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> MLPARPolicy:
        missing = sorted({"inputs", "outputs", *PARAMETERS} - set(arrays))
        if missing:
            raise ValueError(f"saved mlp-ar policy lacks {missing}")
        embed, first_bias = arrays["embed"], arrays["first_bias"]
        if embed.ndim != 2 or first_bias.ndim != 2:
            raise ValueError("saved embed and first_bias must be matrices")
        encoding = ContextOneHot.of(task)
        net = _Net(encoding.input_vocab, arrays["inputs"].astype(np.int64),
                   arrays["outputs"].astype(np.int64), encoding.prompt_length, task.horizon,
                   task.vocab_size, int(embed.shape[1]), int(first_bias.shape[1]))
        net.load_arrays(arrays)
        return cls(task, net, info)


@dataclass
class MLPAR(Agent):
    """A shallow full-context MLP trained by next-token prediction (module doc)."""

    embed_dim: int = 16
    hidden: int = 128
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1.0
    num_threads: int = 1
    name: str = "mlp-ar"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> MLPARPolicy:
        for name in ("embed_dim", "hidden", "epochs", "batch_size", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, got "
                             f"{self.learning_rate} and {self.weight_decay}")
        rng = np.random.default_rng(0) if rng is None else rng
        threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)  # small per-step tensors: one thread is fastest
        try:
            return self._fit(task, demonstrations, rng)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, task: SequenceTask, demonstrations: Demonstrations | None,
             rng: np.random.Generator) -> MLPARPolicy:
        torch.manual_seed(int(rng.integers(2**31)))
        encoding = ContextOneHot.of(task)
        prompts, tokens, weights = training_sequences(task, demonstrations)
        encoding.active(prompts, tokens[:, :-1])  # validates the token ranges
        context = np.concatenate([prompts, tokens[:, :-1]], axis=1)
        inputs, outputs = _varying(context), _varying(tokens)
        net = _Net(encoding.input_vocab, inputs, outputs, encoding.prompt_length, task.horizon,
                   task.vocab_size, self.embed_dim, self.hidden)
        counts = np.zeros((task.horizon, task.vocab_size))
        np.add.at(counts, (np.broadcast_to(np.arange(task.horizon), tokens.shape), tokens),
                  np.broadcast_to(weights[:, None] / weights.mean(), tokens.shape))
        with torch.no_grad():  # output biases start at the (smoothed) log target frequencies
            net.bias.copy_(torch.from_numpy(
                np.log((counts + 1 / task.vocab_size) / (len(tokens) + 1))))
        matrices = [net.first, net.layer2.weight, net.out.weight]  # decayed; biases and the
        others = [net.embed.weight, net.first_bias, net.layer2.bias, net.bias]  # embedding not
        optimiser = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": self.weight_decay},
             {"params": others, "weight_decay": 0.0}], lr=self.learning_rate)
        steps = self.epochs * -(-len(tokens) // self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
        features = torch.from_numpy(context[:, inputs])
        targets = torch.from_numpy(tokens)
        row_weight = torch.from_numpy(weights / weights.mean()).float()
        losses = []
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(tokens)))
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                logits = net(features[batch])
                per_token = nn.functional.cross_entropy(
                    logits.reshape(-1, task.vocab_size), targets[batch].reshape(-1),
                    reduction="none").view(len(batch), -1)
                loss = (per_token.mean(dim=1) * row_weight[batch]).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(batch)
            losses.append(total / len(order))
        info = {"agent": self.name, "embed_dim": self.embed_dim, "hidden": self.hidden,
                "epochs": self.epochs, "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay,
                "train_log_loss_per_token": losses[-1], "inputs": len(inputs),
                "outputs": len(outputs),
                "parameters": int(sum(p.numel() for p in net.parameters()))}
        return MLPARPolicy(task, net, info)
