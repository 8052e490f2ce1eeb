"""HuggingFace causal language models as learners: agents ``hf:<model_type>?key=value&...``.

``hf:gpt2?n_layer=1&n_embd=32`` builds a randomly initialised ``transformers`` model of that
type from its config (``AutoConfig.for_model``: no download, no remote code) over the task's
words (:mod:`ntp_envs.hf`) and trains it with the next-token log loss on the demonstrations
in one of the modes of :mod:`agents.gpt` (``?mode=tf|reverse|teacherless``; the path-star
agents ``gpt-tf``, ``gpt-reverse``, ``gpt-teacherless`` are this agent on GPT-2). The
query's other keys are training settings (:data:`TRAIN_KEYS`) or config attributes of the
model type (sizes: ``n_layer``, ``n_embd``, ``hidden_size``, ...); model types without
entries in :data:`SMALL_SIZES` keep their config's defaults, which must stay under
:data:`MAX_PARAMETERS`.

The model reads the prompt's word ids and then the target inputs; target token ``h`` is
predicted at position ``L - 1 + h`` from the logits of the task's action words (word ids
``0..V-1``, renormalised), so a model trained by TRL on :func:`ntp_envs.hf.tokenizer` texts
is scored the same way (:class:`HFSequenceModel`). Device: ``NTP_GYM_DEVICE`` (as the GPT
agents). Fitted policies save as ``.npz`` (parameters as arrays, config as JSON) and with
:meth:`HFPolicy.save_pretrained` (safetensors + tokenizer + ``ntp_gym.json``); neither
unpickles.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.base import Agent, FittedPolicy, demonstration_arrays, register_policy_kind
from agents.lm_inputs import MODES, chunk_rows, gpt_device, target_inputs
from agents.sequence_training import Schedule, train_next_token
from ntp_envs.decoding import greedy_decode
from ntp_envs.hf import text_view
from ntp_envs.sequence_model import TeacherForcedModel, sample_categorical
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_float, check_int

if TYPE_CHECKING:
    from experts.demonstrations import Demonstrations

__all__ = ["HF_PREFIX", "MAX_PARAMETERS", "PRETRAINED_META", "SMALL_SIZES", "TRAIN_KEYS",
           "HFAgent", "HFPolicy", "HFSequenceModel", "build_model", "hf_agent",
           "load_pretrained"]

HF_PREFIX = "hf:"
TRAIN_KEYS = ("mode", "steps", "batch_size", "lr", "weight_decay", "warmup", "grad_clip")
"""Query keys of an ``hf:`` name that set training, not the model config."""
SMALL_SIZES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 2, "n_head": 4, "n_embd": 64, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
             "attn_pdrop": 0.0},
    "llama": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4},
    "mistral": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4},
    "qwen2": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4},
    "mamba": {"hidden_size": 64, "num_hidden_layers": 2, "state_size": 16},
    "gpt_neox": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "rotary_pct": 1.0, "use_parallel_residual": False,
                 "hidden_dropout": 0.0, "attention_dropout": 0.0},
}
"""Default sizes of a few model types (their library defaults are up to billions of
parameters; GPT-2 and GPT-NeoX without dropout; GPT-NeoX with rotary positions on every
head dimension and sequential residuals, as the path-star agents of :mod:`agents.gpt`)."""
MAX_PARAMETERS = 200_000_000
PRETRAINED_META = "ntp_gym.json"
"""The file :meth:`HFPolicy.save_pretrained` writes beside the model: task and mode."""
PRETRAINED_FORMAT = "ntp-gym-hf/1"


def _transformers() -> Any:
    """The ``transformers`` module; ValueError naming the ``hf`` extra when it is missing."""
    try:
        import transformers
    except ImportError:
        raise ValueError("hf:<model_type> agents and HF models need the hf extra: "
                         "pip install 'ntp-gym[hf]'") from None
    return transformers


def causal_lm_types() -> list[str]:
    """Model types ``transformers`` builds as causal language models."""
    _transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _config_class(model_type: str, flag: str = "model_type") -> Any:
    transformers = _transformers()
    types = causal_lm_types()
    if model_type not in types or model_type not in transformers.CONFIG_MAPPING:
        raise ValueError(f"{flag}: {model_type!r} is no causal LM type of transformers "
                         f"{transformers.__version__} (e.g. gpt2, llama, mamba; "
                         f"{len(types)} in all)")
    return transformers.CONFIG_MAPPING[model_type]


def build_model(task: SequenceTask, model_type: str, sizes: dict[str, Any],
                seed: int = 0) -> Any:
    """A randomly initialised causal LM of ``model_type`` over the task's words (no download):
    its config is :data:`SMALL_SIZES` updated by ``sizes``; ValueError when a size is no
    config attribute, the config is refused, or it exceeds :data:`MAX_PARAMETERS`."""
    transformers = _transformers()
    cls = _config_class(model_type)
    defaults = cls()
    unknown = sorted(k for k in sizes if not hasattr(defaults, k))
    if unknown:
        raise ValueError(f"hf:{model_type}: {unknown} are no config attributes of "
                         f"{cls.__name__} nor training keys {list(TRAIN_KEYS)}")
    view = text_view(task)
    ids = view.special_ids
    values = {**SMALL_SIZES.get(model_type, {}), **sizes}
    try:
        config = transformers.AutoConfig.for_model(
            model_type, vocab_size=view.vocab_size, bos_token_id=ids["bos_token"],
            eos_token_id=ids["eos_token"], pad_token_id=ids["pad_token"], **values)
        with torch.device("meta"):
            count = sum(p.numel() for p in
                        transformers.AutoModelForCausalLM.from_config(config).parameters())
    except (ValueError, TypeError, AssertionError, RuntimeError) as err:
        raise ValueError(f"hf:{model_type} with {values}: transformers refuses the config: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                         ) from None
    if count > MAX_PARAMETERS:
        raise ValueError(f"hf:{model_type} with {values} has {count:,} parameters, more than "
                         f"{MAX_PARAMETERS:,}: give sizes (e.g. ?n_layer=2&n_embd=64)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.AutoModelForCausalLM.from_config(config)


class HFSequenceModel(TeacherForcedModel):
    """A ``transformers`` causal LM over :func:`ntp_envs.hf.tokenizer`'s words as a sequence
    model of ``task``: exact next-token log-probabilities over the action words."""

    def __init__(self, model: Any, task: SequenceTask, mode: str = "tf",
                 device: torch.device | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        view = text_view(task)
        out = model.get_output_embeddings()
        width = getattr(out, "out_features", None) or int(model.config.vocab_size)
        if width < view.vocab_size:
            raise ValueError(f"the model predicts {width} token ids, fewer than the "
                             f"{view.vocab_size} words of {task.env_id}: train it on "
                             "ntp_envs.hf.tokenizer(task)")
        self.device = gpt_device() if device is None else device
        self.model = model.to(self.device).eval()
        self.mode = mode
        self.vocab_size = task.vocab_size
        self.horizon = task.horizon
        self.prompt_length = task.prompts.prompt_length
        self.view = view
        self.dummy = view.special_ids["pad_token"]
        self.lead = [view.special_ids["bos_token"]] if self.prompt_length == 0 else []

    def inputs(self, prompts: IntArray, prefixes: IntArray) -> IntArray:
        """Word ids the model reads: (``<bos>`` for empty prompts) the prompt, then the
        target inputs of the mode."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(f"prompts must have shape (B, {self.prompt_length}), "
                             f"got {prompts.shape}")
        lead = np.full((len(prompts), len(self.lead)), self.lead[0] if self.lead else 0)
        return np.concatenate([lead.astype(np.int64), self.view.prompt_ids(prompts),
                               target_inputs(prefixes, self.mode, self.dummy)], axis=1)

    @property
    def start(self) -> int:
        """Position whose logits predict the first target token."""
        return len(self.lead) + self.prompt_length - 1

    def target_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        """``(B, h + 1, V)``: log-probabilities of target tokens ``0..h`` for prefixes of
        length ``h`` (teacher-forced on the prefix; ignored by ``teacherless``)."""
        prefixes = np.asarray(prefixes, dtype=np.int64).reshape(len(prompts), -1)
        if prefixes.shape[1] >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, "
                             f"got {prefixes.shape[1]}")
        inputs = self.inputs(prompts, prefixes)
        out = np.empty((len(inputs), prefixes.shape[1] + 1, self.vocab_size))
        with torch.inference_mode():
            rows = chunk_rows(inputs.shape[1], self.device)
            for first in range(0, len(inputs), rows):
                batch = torch.as_tensor(inputs[first : first + rows], device=self.device)
                logits = self.model(input_ids=batch, **self.mask(batch)).logits[
                    :, self.start:, :self.vocab_size]
                out[first : first + rows] = (
                    torch.log_softmax(logits.double(), dim=-1).cpu().numpy())
        return out

    def mask(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """``attention_mask`` (all ones) where the inputs hold the pad word (``teacherless``'s
        dummy: every position is attended, and transformers does not warn of padding)."""
        return {"attention_mask": torch.ones_like(batch)} if self.mode == "teacherless" else {}

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        """One sequence per prompt (``teacherless``: all positions from one forward pass)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if self.mode == "teacherless":
            logp = self.target_logprobs(prompts, np.zeros((len(prompts), self.horizon - 1),
                                                          dtype=np.int64))
            return np.stack([sample_categorical(logp[:, h], rng) for h in range(self.horizon)],
                            axis=1)
        return super().sample(prompts, rng)

    def greedy(self, prompts: IntArray) -> IntArray:
        """The argmax sequence per prompt (``teacherless``: one forward pass)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if self.mode != "teacherless":
            return greedy_decode(self, prompts)
        blank = np.zeros((len(prompts), self.horizon - 1), dtype=np.int64)
        return self.target_logprobs(prompts, blank).argmax(axis=2).astype(np.int64)


def _state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {f"param/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}


@register_policy_kind
class HFPolicy(FittedPolicy):
    """A fitted ``hf:`` agent; ``info`` holds the model type, its config and the mode."""

    kind = "hf_lm"

    def __init__(self, task: SequenceTask, model: Any, mode: str,
                 info: dict[str, Any] | None = None) -> None:
        self.net = model
        self.mode = mode
        config = json.loads(model.config.to_json_string(use_diff=True))  # non-defaults
        super().__init__(task, HFSequenceModel(model, task, mode),
                         {**(info or {}), "mode": mode, "model_type": model.config.model_type,
                          "config": config})

    def greedy(self, prompts: IntArray) -> IntArray:
        """The argmax sequence per prompt (see :meth:`HFSequenceModel.greedy`)."""
        return self.model.greedy(prompts)

    def arrays(self) -> dict[str, np.ndarray]:
        return _state_arrays(self.net)

    @classmethod
    def from_arrays(cls, task: SequenceTask, arrays: dict[str, np.ndarray],
                    info: dict[str, Any]) -> HFPolicy:
        transformers = _transformers()
        mode, model_type, config = info.get("mode"), info.get("model_type"), info.get("config")
        if mode not in MODES or not isinstance(model_type, str) or not isinstance(config, dict):
            raise ValueError("saved info must hold mode, model_type and config")
        config = _config_class(str(model_type), "saved model_type").from_dict(config)
        with torch.random.fork_rng(devices=[]):
            model = transformers.AutoModelForCausalLM.from_config(config)
        state = model.state_dict()
        saved = {k.removeprefix("param/"): v for k, v in arrays.items()}
        if set(saved) != set(state):
            raise ValueError(f"saved parameters {sorted(saved)[:4]}... do not match the "
                             f"{model_type} architecture")
        for name, value in saved.items():
            if value.shape != tuple(state[name].shape) or not np.isfinite(value).all():
                raise ValueError(f"saved parameter {name} must be finite with shape "
                                 f"{tuple(state[name].shape)}, got {value.shape}")
        model.load_state_dict({k: torch.as_tensor(v) for k, v in saved.items()})
        rest = {k: v for k, v in info.items() if k not in ("mode", "model_type", "config")}
        return cls(task, model, str(mode), rest)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model (safetensors), the task's tokenizer and :data:`PRETRAINED_META`
        to ``directory``; :func:`load_pretrained` reads it back."""
        from ntp_envs.hf import tokenizer

        out = Path(directory)
        self.net.save_pretrained(out, safe_serialization=True)
        tokenizer(self.task).save_pretrained(out)
        meta = {"format": PRETRAINED_FORMAT, "env_id": self.task.env_id,
                "env_kwargs": self.task.params, "mode": self.mode,
                "info": {k: v for k, v in self.info.items() if k != "config"}}
        (out / PRETRAINED_META).write_text(json.dumps(meta, sort_keys=True, default=str))
        return out


UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".py")


def load_pretrained(directory: str | os.PathLike[str], task: SequenceTask | None = None,
                    flag: str = "directory") -> HFPolicy:
    """A ``save_pretrained`` directory as a policy of ``task`` (from its
    :data:`PRETRAINED_META` when ``task`` is None): safetensors weights only, built-in model
    types only (never remote code, never pickle); one-line ValueError naming ``flag``
    otherwise. A directory without the metadata (e.g. written by TRL) needs ``task`` and is
    read in ``tf`` mode."""
    from agents.base import env_instance
    from ntp_envs import make_task, registered_env_ids

    transformers = _transformers()
    root = Path(directory)
    if not (root / "config.json").is_file():
        raise ValueError(f"{flag}: {str(root)!r} is no save_pretrained directory "
                         "(no config.json)")
    unsafe = sorted(p.name for p in root.iterdir() if p.suffix in UNSAFE_SUFFIXES)
    if unsafe:
        raise ValueError(f"{flag}: {str(root)!r} holds {unsafe}: only safetensors weights are "
                         "read (pickle-based and code files are refused)")
    if not any(p.suffix == ".safetensors" for p in root.iterdir()):
        raise ValueError(f"{flag}: {str(root)!r} has no .safetensors weights")
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{flag}: config.json is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "auto_map" in config:
        raise ValueError(f"{flag}: config.json asks for remote code (auto_map): refused")
    _config_class(str(config.get("model_type")), f"{flag}: config.json model_type")
    mode, info = "tf", {}
    meta_path = root / PRETRAINED_META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{flag}: {PRETRAINED_META} is not valid JSON: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT or \
                meta.get("mode") not in MODES or not isinstance(meta.get("env_kwargs"), dict):
            raise ValueError(f"{flag}: {PRETRAINED_META} is not {PRETRAINED_FORMAT} metadata")
        mode, info = meta["mode"], dict(meta.get("info") or {})
        env_id, kwargs = str(meta.get("env_id")), meta["env_kwargs"]
        if task is None:
            if env_id not in registered_env_ids():
                raise ValueError(f"{flag}: its env_id {env_id!r} is not a suite env: give "
                                 "the task (--env)")
            task = make_task(env_id, **kwargs)
        elif env_instance(env_id, kwargs) != env_instance(task.env_id, task.params):
            raise ValueError(f"{flag}: the model was fitted on {env_instance(env_id, kwargs)}, "
                             f"not on {env_instance(task.env_id, task.params)}")
    elif task is None:
        raise ValueError(f"{flag}: {str(root)!r} has no {PRETRAINED_META}: give the task "
                         "(--env) it was trained on")
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            root, trust_remote_code=False, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{flag}: transformers cannot load {str(root)!r}: "
                         f"{str(err).splitlines()[0]}") from None
    return HFPolicy(task, model, mode, info)


@dataclass
class HFAgent(Agent):
    """Fit a ``transformers`` causal LM of ``model_type`` to demonstrations (module doc)."""

    model_type: str = "gpt2"
    sizes: dict[str, Any] = field(default_factory=dict)
    mode: str = "tf"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    name: str = ""
    """Defaults to ``hf:<model_type>``."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0, 10.0)
        check_int("warmup", self.warmup, 0)
        check_float("grad_clip", self.grad_clip, 0.0, 1e6, low_open=True)
        cls = _config_class(self.model_type)
        defaults = cls()
        unknown = sorted(k for k in self.sizes if not hasattr(defaults, k))
        if unknown:
            raise ValueError(f"{unknown} are no config attributes of "
                             f"{cls.__name__} nor training keys {list(TRAIN_KEYS)}")
        self.name = self.name or f"{HF_PREFIX}{self.model_type}"

    def check_task(self, task: SequenceTask) -> None:
        super().check_task(task)
        if self.mode == "reverse" and task.params.get("target_order") != "reverse":
            raise ValueError(f"{self.name} (mode=reverse) trains on goal-to-source targets: "
                             "the task must emit them (target_order='reverse'); got "
                             f"target_order={task.params.get('target_order')!r}")

    def fit(self, task: SequenceTask, demonstrations: Demonstrations | None,
            rng: np.random.Generator | None = None) -> HFPolicy:
        if demonstrations is None:
            raise ValueError(f"{self.name} fits from demonstrations only (no population fit)")
        prompts, tokens = demonstration_arrays(task, demonstrations)  # the data check first
        self.check_task(task)
        device = gpt_device()
        generator = np.random.default_rng(rng)
        torch_gen = torch.Generator().manual_seed(int(generator.integers(2**62)))
        model = build_model(task, self.model_type, self.sizes,
                            seed=int(generator.integers(2**62)))
        reader = HFSequenceModel(model, task, self.mode, device)
        model.train()
        x_all = torch.as_tensor(reader.inputs(prompts, tokens[:, :-1]), device=device)
        y_all = torch.as_tensor(np.array(tokens), device=device)
        start, vocab = reader.start, task.vocab_size
        schedule = Schedule(self.steps, self.batch_size, self.lr, self.weight_decay,
                            self.warmup, self.grad_clip)
        n = len(tokens)
        began = time.perf_counter()
        losses = train_next_token(
            model, lambda x: model(input_ids=x, **reader.mask(x)).logits[:, start:, :vocab],
            x_all, y_all,
            schedule, torch_gen)
        seconds = time.perf_counter() - began
        tail = losses[-max(1, len(losses) // 20):]
        info = {"agent": self.name, "device": str(device), "train_sequences": n,
                "train_seconds": seconds, "seconds_per_step": seconds / self.steps,
                "final_train_loss": float(np.mean(tail)),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "transformers": _transformers().__version__}
        return HFPolicy(task, model.cpu(), self.mode, info)


def hf_agent(name: str, flag: str = "agent") -> HFAgent:
    """The agent of an ``hf:<model_type>?key=value&...`` name (module doc); one-line
    ValueError naming ``flag`` when the name is malformed or a key is unknown."""
    from ntp_envs.plugins import parse_spec

    if not name.startswith(HF_PREFIX):
        raise ValueError(f"{flag}: {name!r} does not start with {HF_PREFIX!r}")
    spec = parse_spec(name[len(HF_PREFIX):], flag)
    train = {k: v for k, v in spec.kwargs.items() if k in TRAIN_KEYS}
    sizes = {k: v for k, v in spec.kwargs.items() if k not in TRAIN_KEYS}
    try:
        return HFAgent(model_type=spec.target, sizes=sizes, name=name.strip(), **train)
    except ValueError as err:
        text = str(err)
        raise ValueError(text if text.startswith(flag) else f"{flag}: {name}: {text}") from None
