"""A small GPT-style causal transformer trained three ways (Bachmann & Nagarajan, ICML 2024).

The model reads ``x`` (the prompt, ``L`` tokens) followed by ``H - 1`` target-position inputs
and predicts target token ``h`` at sequence position ``L - 1 + h`` (causal attention, learned
absolute positions, pre-LayerNorm blocks). Training is next-token log loss on the ``H``
target tokens of the demonstrations, in one of three modes:

* ``tf`` (agent ``gpt-tf``): teacher forcing: the inputs are the true target tokens.
* ``reverse`` (agent ``gpt-reverse``): teacher forcing on a target written goal-to-source;
  the task must emit it in that order (``PathStar-v0`` with ``target_order="reverse"``):
  a reverse-order model has no closed-form next-token conditionals in forward order, so
  it could not act in a forward-order env.
* ``teacherless`` (agent ``gpt-teacherless``): every target input is the dummy token (an
  input-only token, :func:`dummy_token`), so all ``H`` target tokens are predicted from
  ``x`` alone in one forward pass; the learned policy ignores its own previous tokens, its
  sequence law is the product ``prod_h p_h(a_h | x)`` and decoding is one pass.

Device: the environment variable ``NTP_GYM_DEVICE`` (default ``"cpu"``; e.g. ``"cuda"``)
picks where the model trains and runs. Fitted policies save without pickle (the
``state_dict`` as numpy arrays, the configuration in the JSON metadata).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.base import DEVICE_ENV, Agent, FittedPolicy, demonstration_arrays, register_policy_kind
from agents.sequence_training import Schedule, train_next_token
from ntp_envs.sequence_model import TeacherForcedModel, sample_categorical
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_float, check_int

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

__all__ = ["CPU_CONFIG", "DEVICE_ENV", "LARGE_CONFIG", "MODES", "GPTAgent", "GPTConfig",
           "GPTNet", "GPTPolicy", "GPTSequenceModel", "build_net", "chunk_rows", "dummy_token",
           "gpt_agent", "gpt_device", "parse_device", "target_inputs"]

MODES = ("tf", "reverse", "teacherless")
CHUNK_ROWS = 4096
"""Sequences per forward pass at inference on an accelerator (bounds memory)."""
CPU_CHUNK_TOKENS = 4096
"""Tokens per forward pass at inference on the CPU: small models run 1.5-3x faster per token
in chunks that stay in cache (2-layer GPT-2, width 64: 102k tokens/s at 2,048 tokens, 63k at
32,768; ``benchmarks/bench_hf_score.py``)."""


def chunk_rows(length: int, device: torch.device) -> int:
    """Sequences of ``length`` tokens per forward pass at inference on ``device``."""
    if device.type != "cpu":
        return CHUNK_ROWS
    return max(1, CPU_CHUNK_TOKENS // max(1, length))


def parse_device(name: str, source: str = DEVICE_ENV) -> torch.device:
    """The torch device called ``name``; ValueError naming ``source`` (the variable or flag
    it came from) when it is not cpu, cuda[:i] or mps, or is not available here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{source} must name a torch device (cpu, cuda, cuda:0, mps), "
                         f"got {name!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{source} must be cpu, cuda[:i] or mps, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source}={name!r} but torch sees no CUDA device; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{source}={name!r} but torch sees no MPS device; use cpu")
    return device


def gpt_device() -> torch.device:
    """The torch device named by ``NTP_GYM_DEVICE`` (default ``cpu``; ``ntp-bench sweep
    --device`` sets it for every worker); ValueError naming the variable when unusable."""
    return parse_device(os.environ.get(DEVICE_ENV, "cpu").strip() or "cpu")


@dataclass(frozen=True)
class GPTConfig:
    """Model size and training budget (``steps`` Adam steps of ``batch_size`` sequences,
    linear warm-up then cosine decay to ``lr / 10``)."""

    n_layer: int = 3
    n_head: int = 4
    d_model: int = 64
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    rotary: bool = True

    def __post_init__(self) -> None:
        check_int("n_layer", self.n_layer, 1, 64)
        check_int("n_head", self.n_head, 1, 64)
        check_int("d_model", self.d_model, 1, 8192)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model must be a multiple of n_head {self.n_head}, "
                             f"got {self.d_model}")
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0, 10.0)
        check_int("warmup", self.warmup, 0)
        check_float("grad_clip", self.grad_clip, 0.0, 1e6, low_open=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """Rebuild from :func:`dataclasses.asdict` output (ValueError on unknown keys)."""
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {sorted(unknown)}; known: "
                             f"{sorted(names)}")
        return cls(**values)


CPU_CONFIG = GPTConfig()
"""The registered agents' budget: 10,000 steps, about 64 ms each single-threaded at the
``PathStar-v0`` defaults (degree 2, path_length 4, num_nodes 20), i.e. about 10 minutes per
fit on one CPU core (``benchmarks/bench_gpt.py``); enough for ``gpt-reverse`` to solve the
task and for ``gpt-tf`` to learn the Clever-Hans lookup."""

LARGE_CONFIG = GPTConfig(n_layer=6, n_head=6, d_model=384, steps=50_000, batch_size=256,
                         lr=5e-4, warmup=1000)
"""The paper's model size (6 layers, width 384) and a 5x longer run, for a GPU
(``NTP_GYM_DEVICE=cuda``): agent ``gpt-teacherless-large``. The paper's teacherless
successes on small graphs came from long training; this configuration has not been run in
this repository's CPU-only development (see the README)."""


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
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_head, config.rotary)
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


def target_inputs(prefixes: IntArray, mode: str, dummy: int) -> IntArray:
    """What the model reads at the target positions before each target token: the tokens
    themselves (``tf``/``reverse``), or the dummy token at every position (``teacherless``)."""
    prefixes = np.asarray(prefixes, dtype=np.int64)
    if mode == "teacherless":
        return np.full(prefixes.shape, dummy, dtype=np.int64)
    return prefixes


class GPTSequenceModel(TeacherForcedModel):
    """A trained :class:`GPTNet` as a sequence model (exact next-token log-probabilities)."""

    def __init__(self, net: GPTNet, mode: str, prompt_length: int, vocab_size: int,
                 horizon: int, device: torch.device) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.net = net.to(device).eval()
        self.mode = mode
        self.prompt_length = prompt_length
        self.vocab_size = vocab_size
        self.horizon = horizon
        self.device = device
        self.dummy = net.tok.num_embeddings - 1

    def target_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        """``(B, h + 1, V)``: log-probabilities of target tokens ``0..h`` for prefixes of
        length ``h`` (teacher-forced on the prefix; ignored by ``teacherless``)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(f"prompts must have shape (B, {self.prompt_length}), "
                             f"got {prompts.shape}")
        if prompts.size and (prompts.min() < 0 or prompts.max() >= self.dummy):
            raise ValueError(f"prompts must lie in [0, {self.dummy - 1}]")
        prefixes = np.asarray(prefixes, dtype=np.int64).reshape(len(prompts), -1)
        if prefixes.shape[1] >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, "
                             f"got {prefixes.shape[1]}")
        inputs = np.concatenate([prompts, target_inputs(prefixes, self.mode, self.dummy)], 1)
        start = self.prompt_length - 1
        out = np.empty((len(prompts), prefixes.shape[1] + 1, self.vocab_size))
        with torch.inference_mode():
            rows = chunk_rows(inputs.shape[1], self.device)
            for first in range(0, len(prompts), rows):
                batch = torch.as_tensor(inputs[first : first + rows], device=self.device)
                logits = self.net(batch)[:, start:].float()
                out[first : first + rows] = (
                    torch.log_softmax(logits, dim=-1).double().cpu().numpy()
                )
        return out

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        """One sequence per prompt (``teacherless``: all positions from one forward pass)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if self.mode == "teacherless":
            logp = self.target_logprobs(prompts, np.zeros((len(prompts), self.horizon - 1)))
            return np.stack([sample_categorical(logp[:, h], rng) for h in range(self.horizon)],
                            axis=1)
        return super().sample(prompts, rng)

    def greedy(self, prompts: IntArray) -> IntArray:
        """The argmax sequence per prompt (``teacherless``: one forward pass)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        tokens = np.zeros((len(prompts), self.horizon), dtype=np.int64)
        if self.mode == "teacherless":
            logp = self.target_logprobs(prompts, tokens[:, :-1])
            return logp.argmax(axis=2).astype(np.int64)
        for h in range(self.horizon):
            tokens[:, h] = self.target_logprobs(prompts, tokens[:, :h])[:, -1].argmax(axis=1)
        return tokens


@register_policy_kind
class GPTPolicy(FittedPolicy):
    """A fitted GPT (any mode); ``info`` holds the mode and the :class:`GPTConfig`."""

    kind = "gpt"

    def __init__(self, task: SequenceTask, net: GPTNet, mode: str, config: GPTConfig,
                 info: dict[str, Any] | None = None) -> None:
        self.net = net
        self.mode = mode
        self.config = config
        model = GPTSequenceModel(net, mode, task.prompts.prompt_length, task.vocab_size,
                                 task.horizon, gpt_device())
        super().__init__(task, model, {**(info or {}), "mode": mode, "config": asdict(config)})

    def greedy(self, prompts: IntArray) -> IntArray:
        """The argmax sequence per prompt (see :meth:`GPTSequenceModel.greedy`)."""
        return self.model.greedy(prompts)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"param/{name}": value.detach().cpu().numpy()
                for name, value in self.net.state_dict().items()}

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> GPTPolicy:
        mode = info.get("mode")
        if mode not in MODES:
            raise ValueError(f"saved mode must be one of {list(MODES)}, got {mode!r}")
        if not isinstance(info.get("config"), dict):
            raise ValueError("saved info lacks the GPT config")
        config = GPTConfig.from_dict(info["config"])
        net = build_net(task, config)
        state = net.state_dict()
        saved = {k.removeprefix("param/"): v for k, v in arrays.items()}
        if set(saved) != set(state):
            raise ValueError(f"saved parameters {sorted(saved)} do not match the architecture")
        for name, value in saved.items():
            if value.shape != tuple(state[name].shape) or not np.isfinite(value).all():
                raise ValueError(f"saved parameter {name} must be finite with shape "
                                 f"{tuple(state[name].shape)}, got {value.shape}")
        net.load_state_dict({k: torch.as_tensor(v) for k, v in saved.items()})
        rest = {k: v for k, v in info.items() if k not in ("mode", "config")}
        return cls(task, net, mode, config, rest)


def dummy_token(task: SequenceTask) -> int:
    """The input-only dummy token: one past every prompt and target token."""
    return max(task.prompt_vocab_size, task.vocab_size)


def build_net(task: SequenceTask, config: GPTConfig) -> GPTNet:
    """The untrained network for ``task`` (inputs: the vocabulary plus the dummy token)."""
    return GPTNet(dummy_token(task) + 1, task.vocab_size,
                  task.prompts.prompt_length + task.horizon - 1, config)


@dataclass
class GPTAgent(Agent):
    """Fit a :class:`GPTNet` to demonstrations in one of :data:`MODES` (module doc)."""

    mode: str = "tf"
    config: GPTConfig = CPU_CONFIG
    name: str = ""
    """Defaults to ``gpt-<mode>``."""
    callback: Callable[[int, float, GPTNet], None] | None = field(default=None, repr=False)
    """Called as ``callback(step, loss, net)`` after every step (e.g. learning curves)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        self.name = self.name or f"gpt-{self.mode}"

    def fit(
        self,
        task: SequenceTask,
        demonstrations: Demonstrations | None,
        rng: np.random.Generator | None = None,
    ) -> GPTPolicy:
        if demonstrations is None:
            raise ValueError(f"{self.name} fits from demonstrations only (no population fit)")
        prompts, tokens = demonstration_arrays(task, demonstrations)
        if self.mode == "reverse" and task.params.get("target_order") != "reverse":
            raise ValueError(f"{self.name} trains on goal-to-source targets: the task must emit "
                             "them (target_order='reverse'); got target_order="
                             f"{task.params.get('target_order')!r}")
        device = gpt_device()
        generator = np.random.default_rng(rng)
        torch_gen = torch.Generator().manual_seed(int(generator.integers(2**62)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(generator.integers(2**62)))
            net = build_net(task, self.config)
        net.to(device).train()
        dummy = dummy_token(task)
        inputs = np.concatenate(
            [prompts, target_inputs(tokens[:, :-1], self.mode, dummy)], axis=1)
        x_all = torch.as_tensor(inputs, device=device)
        y_all = torch.as_tensor(np.array(tokens), device=device)
        start = task.prompts.prompt_length - 1
        config = self.config
        schedule = Schedule(config.steps, config.batch_size, config.lr, config.weight_decay,
                            config.warmup, config.grad_clip)
        callback = None if self.callback is None else (
            lambda step, loss: self.callback(step, loss, net))
        began = time.perf_counter()
        losses = train_next_token(net, lambda x: net(x)[:, start:], x_all, y_all, schedule,
                                  torch_gen, callback)
        n = len(tokens)
        tail = losses[-max(1, len(losses) // 20):]
        info = {"agent": self.name, "device": str(device), "train_sequences": n,
                "train_seconds": time.perf_counter() - began,
                "final_train_loss": float(np.mean(tail)),
                "parameters": int(sum(p.numel() for p in net.parameters()))}
        return GPTPolicy(task, net.cpu(), self.mode, self.config, info)


def gpt_agent(mode: str, config: GPTConfig = CPU_CONFIG, name: str = "") -> GPTAgent:
    """A :class:`GPTAgent` named ``gpt-<mode>`` (or ``name``)."""
    return GPTAgent(mode, config, name)

