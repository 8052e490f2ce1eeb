"""``mlp-ar``: a shallow MLP next-token predictor on the one-hot encoding of the full context.

Malach 2023's MLP, written for one sequence task: every context token is embedded by a
shared table ``e`` (a linear map of its one-hot), and at position ``h``

``u_h = relu(sum_{j < L + h} M_{h,j} e(c_j) + b_h)``,  ``v_h = relu(A u_h + a)``,
``logits_h = B v_h + d_h``

with one first-layer block ``M_{h,j}`` per (position, context position) pair (Malach's
masked linear layer), ``A``, ``B`` shared and a per-position output bias ``d_h``. Trained
with torch by AdamW (cosine learning-rate decay to 0; decoupled weight decay
``weight_decay`` on the three weight matrices, none on biases and the embedding) on the
teacher-forced token log loss (next-token prediction), in minibatches of ``batch_size``
sequences, for at most ``epochs`` passes; the output biases start at the log target
frequencies of each position (add-1/V smoothed). A ``validation`` fraction of the training
sequences (demonstrations, or the training prompts of a population fit; never the task's
held-out test prompts) is set aside: after every epoch its teacher-forced log loss is
measured, the weights of the best epoch are kept, and training stops after ``patience``
epochs without improvement. ``info`` reports that loss and the greedy answer accuracy on
the validation sequences; the defaults were chosen on them (``benchmarks/bench_cot.py``).
The first layer on one-hot tokens is computed as a table lookup (``embedding_bag``), so an
epoch costs ``O(n O hidden^2)`` for ``O`` output positions rather than a dense product over
every (input, output) block per sequence.

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
from ntp_envs.decoding import greedy_decode
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
        """Network logits ``(B, O_block, V)`` of the output positions ``outputs[block]``.

        The first layer on one-hot tokens is a lookup: ``sum_j e(c_j) M_j`` is the sum over
        input positions ``j`` of row ``c_j`` of the table ``e M_j`` (``V_in`` rows per
        position), built once per call (independent of the batch) and summed by
        ``embedding_bag``, instead of a ``(B, J * embed_dim)`` by ``(J * embed_dim, O *
        hidden)`` product per batch."""
        columns = slice(block.start * self.hidden, block.stop * self.hidden)
        first = (self.first[:, columns] * self.mask[:, columns]).view(
            len(self.inputs), self.embed_dim, -1)
        table = (self.embed.weight @ first).reshape(-1, first.shape[-1])  # (J * V_in, cols)
        if len(self.inputs):
            offsets = torch.arange(len(self.inputs)) * self.embed.num_embeddings
            u = nn.functional.embedding_bag(tokens + offsets, table, mode="sum")
        else:  # no varying input: the first layer is its bias
            u = table.new_zeros(len(tokens), table.shape[-1])
        u = u.view(len(tokens), -1, self.hidden) + self.first_bias[block]
        return self.out(torch.relu(self.layer2(torch.relu(u))))

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log loss ``(B,)`` of ``targets`` ``(B, H)``, averaged over positions.

        A position without hidden units has logits ``d_h`` for every row: its log-softmax
        is computed once and gathered, not once per row."""
        horizon = self.bias.shape[0]
        bias_only = torch.from_numpy(np.setdiff1d(np.arange(horizon), self.outputs))
        log_bias = torch.log_softmax(self.bias[bias_only], dim=-1)  # (H - O, V)
        total = -log_bias[torch.arange(len(bias_only)), targets[:, bias_only]].sum(dim=1)
        if len(self.outputs):
            index = torch.from_numpy(self.outputs)
            logits = self.hidden_logits(tokens, slice(0, len(index))) + self.bias[index]
            total = total + nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets[:, index].reshape(-1),
                reduction="none").view(len(targets), -1).sum(dim=1)
        return total / horizon

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
    batch_size: int = 256
    learning_rate: float = 1e-2
    weight_decay: float = 1.0
    validation: float = 0.1
    patience: int = 5
    num_threads: int = 1
    name: str = "mlp-ar"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> MLPARPolicy:
        for name in ("embed_dim", "hidden", "epochs", "batch_size", "patience", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, got "
                             f"{self.learning_rate} and {self.weight_decay}")
        if not 0.0 <= self.validation < 0.5:
            raise ValueError(f"validation must lie in [0, 0.5), got {self.validation}")
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
        order = rng.permutation(len(tokens))
        held = order[: int(round(self.validation * len(tokens)))] if len(tokens) > 1 else order[:0]
        fit_rows = np.setdiff1d(order, held)
        context, tokens, weights, val = (context[fit_rows], tokens[fit_rows],
                                         weights[fit_rows], (context[held], tokens[held],
                                                             weights[held]))
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
             {"params": others, "weight_decay": 0.0}], lr=self.learning_rate, fused=True)
        steps = self.epochs * -(-len(tokens) // self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
        features = torch.from_numpy(context[:, inputs])
        targets = torch.from_numpy(tokens)
        row_weight = torch.from_numpy(weights / weights.mean()).float()
        val_features, val_targets = torch.from_numpy(val[0][:, inputs]), torch.from_numpy(val[1])
        val_weight = torch.from_numpy(val[2] / max(val[2].mean(), 1e-300) if len(held) else
                                      val[2]).float()
        losses, val_losses, best = [], [], (np.inf, 0, None)
        for epoch in range(self.epochs):
            perm = torch.from_numpy(rng.permutation(len(tokens)))
            total = 0.0
            for start in range(0, len(perm), self.batch_size):
                batch = perm[start : start + self.batch_size]
                loss = _weighted_loss(net, features[batch], targets[batch], row_weight[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(batch)
            losses.append(total / len(perm))
            if not len(held):
                continue
            with torch.no_grad():
                val_losses.append(float(_weighted_loss(net, val_features, val_targets,
                                                       val_weight)))
            if val_losses[-1] < best[0]:
                best = (val_losses[-1], epoch, {k: v.clone() for k, v in
                                                net.state_dict().items()})
            elif epoch - best[1] >= self.patience:
                break
        if best[2] is not None:
            net.load_state_dict(best[2])
        policy = MLPARPolicy(task, net)
        info = {"agent": self.name, "embed_dim": self.embed_dim, "hidden": self.hidden,
                "epochs": self.epochs, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                "train_log_loss_per_token": losses[best[1]] if val_losses else losses[-1],
                "epochs_run": len(losses), "best_epoch": best[1] + 1 if val_losses else len(losses),
                "validation_rows": len(held),
                "validation_log_loss_per_token": best[0] if val_losses else None,
                "validation_accuracy": _answer_accuracy(task, policy, prompts[held], val[1]),
                "inputs": len(inputs), "outputs": len(outputs),
                "parameters": int(sum(p.numel() for p in net.parameters()))}
        policy.info = info
        return policy


def _answer_accuracy(task: SequenceTask, policy: MLPARPolicy, prompts: IntArray,
                     tokens: IntArray) -> float | None:
    """Greedy answer accuracy on the validation rows (``None`` without rows or answer)."""
    length = int(task.answer_length or 0)
    if not len(prompts) or not length:
        return None
    decoded = greedy_decode(policy, prompts)
    return float((decoded[:, -length:] == tokens[:, -length:]).all(axis=1).mean())


def _weighted_loss(net: _Net, features: torch.Tensor, targets: torch.Tensor,
                   row_weight: torch.Tensor) -> torch.Tensor:
    """Teacher-forced per-token log loss, rows weighted by ``row_weight`` (mean 1)."""
    return (net(features, targets) * row_weight).mean()
