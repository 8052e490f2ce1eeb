"""Thin adapters: outside policies as sequence models the evaluator scores exactly.

:func:`as_sequence_model` turns any of these into a
:class:`~ntp_envs.sequence_model.SequenceModel` of a task (vocabulary and horizon checked):

* a suite policy or any ``SequenceModel`` (used as it is: its finite-state tables or count
  law still reach the exact evaluators);
* any object with ``vocab_size``, ``horizon`` and batched
  ``next_token_logprobs(prompts (B, L), prefixes (B, h)) -> (B, V)`` (:class:`NextTokenModel`);
* a Stable-Baselines3 actor-critic policy or algorithm (PPO, A2C: its ``.policy``), and
  imitation's BC policy, which is one (:class:`agents.sb3_policy.SB3PolicyModel`: the
  action distribution at the env's observation encoding);
* a torch module mapping token contexts to logits (:class:`TorchLogitsModel`).

:func:`load_policy_file` reads a policy from disk without running code from the file: a
suite ``.npz`` archive, an SB3 algorithm ``.zip`` (its JSON ``data`` and ``policy.pth``
weights), or an imitation / SB3 policy file written by ``torch.save`` (imitation's
``util.save_policy``, SB3's ``policy.save``): a restricted unpickler rebuilds only tensors,
numpy arrays and plain containers, and records every other object as an inert
:class:`Opaque` from which the weights, the activation's name and the observation space are
read. The network is then rebuilt as an SB3 ``ActorCriticPolicy`` on the task's spaces.
A suite archive's metadata never names code to import (:func:`agents.base.load_policy`: a suite
env, or the task given, which must be the file's). Files are untrusted: sizes are capped
before anything is inflated (:data:`ntp_envs.archive.MAX_POLICY_BYTES`,
:data:`MAX_SB3_DATA_BYTES`), spaces, weights and layer shapes are checked before a network is
built, and anything malformed is a one-line ValueError naming the flag.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from ntp_envs import archive
from ntp_envs.archive import check_inflated_size
from ntp_envs.base import observation_space
from ntp_envs.sequence_model import SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray

__all__ = ["NextTokenModel", "Opaque", "TorchLogitsModel", "as_sequence_model",
           "load_policy_file", "restricted_torch_load"]


def check_shape(task: SequenceTask, vocab_size: int, horizon: int, flag: str) -> None:
    """One-line ValueError naming ``flag`` when a policy's vocabulary or horizon is not the
    task's."""
    if (vocab_size, horizon) != (task.vocab_size, task.horizon):
        raise ValueError(f"{flag}: the policy has vocabulary {vocab_size} and horizon "
                         f"{horizon}, the task {task.env_id} has vocabulary {task.vocab_size} "
                         f"and horizon {task.horizon}")


class NextTokenModel(SequenceModel):
    """A sequence model from any object with batched ``next_token_logprobs`` (log-softmax
    is applied, so unnormalised log-scores are accepted)."""

    def __init__(self, task: SequenceTask, policy: Any, flag: str = "policy") -> None:
        check_shape(task, int(policy.vocab_size), int(policy.horizon), flag)
        self.policy = policy
        self.vocab_size = task.vocab_size
        self.horizon = task.horizon

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        scores = np.asarray(self.policy.next_token_logprobs(prompts, prefixes), dtype=np.float64)
        if scores.shape != (len(prompts), self.vocab_size):
            raise ValueError(f"next_token_logprobs must return shape ({len(prompts)}, "
                             f"{self.vocab_size}), got {scores.shape}")
        return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


class TorchLogitsModel(SequenceModel):
    """A torch module as a sequence model: ``module(prompts, prefixes)`` with long tensors
    ``(B, L)`` and ``(B, h)`` returns next-token logits ``(B, V)``. With ``causal=True`` it is
    called once on whole sequences, ``module(prompts, tokens (B, T)) -> (B, T, V)``, row ``t``
    the logits of token ``t`` given ``tokens[:, :t]`` (it must not look ahead)."""

    def __init__(self, task: SequenceTask, module: th.nn.Module, causal: bool = False,
                 flag: str = "policy") -> None:
        self.module = module
        self.causal = bool(causal)
        self.flag = flag
        self.vocab_size = task.vocab_size
        self.horizon = task.horizon
        self.device = next(iter(module.parameters()), th.zeros(0)).device

    def _logits(self, prompts: IntArray, tokens: IntArray) -> th.Tensor:
        x = th.as_tensor(np.asarray(prompts, dtype=np.int64), device=self.device)
        a = th.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)
        self.module.eval()
        with th.no_grad():
            out = self.module(x, a)
        if out.shape[-1] != self.vocab_size:
            raise ValueError(f"{self.flag}: the module gives logits over {out.shape[-1]} tokens, "
                             f"the task has vocabulary {self.vocab_size}")
        return th.log_softmax(out.double(), dim=-1).cpu()

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        h = prefixes.shape[1]
        if h >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, got {h}")
        if not self.causal:
            return self._logits(prompts, prefixes).numpy()
        padded = np.concatenate([prefixes, np.zeros((len(prefixes), 1), np.int64)], axis=1)
        return self._logits(prompts, padded)[:, h].numpy()

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        if not self.causal:
            return super().token_logprobs(prompts, tokens)
        tokens = self._check_tokens(tokens)
        logp = self._logits(prompts, tokens).numpy()
        return np.take_along_axis(logp, tokens[:, :, None], axis=2)[:, :, 0]


def as_sequence_model(task: SequenceTask, policy: Any, *, causal: bool = False,
                      flag: str = "policy") -> SequenceModel:
    """``policy`` as a sequence model of ``task`` (module doc); one-line ValueError naming
    ``flag`` for an object no adapter takes, a vocabulary/horizon that is not the task's, or a
    suite policy fitted on another env instance."""
    if isinstance(policy, SequenceModel):
        from agents.base import FittedPolicy, env_instance

        if isinstance(policy, FittedPolicy):  # a suite policy's law is its own task's
            fitted = env_instance(policy.task.env_id, policy.task.params)
            if fitted != env_instance(task.env_id, task.params):
                raise ValueError(f"{flag}: the policy was fitted on {fitted}, not on the task "
                                 f"given: {env_instance(task.env_id, task.params)}")
        check_shape(task, policy.vocab_size, policy.horizon, flag)
        return policy
    if callable(getattr(policy, "next_token_logprobs", None)):
        return NextTokenModel(task, policy, flag)
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import ActorCriticPolicy

    if isinstance(policy, BaseAlgorithm):
        policy = policy.policy
    if isinstance(policy, ActorCriticPolicy):
        from agents.sb3_policy import SB3PolicyModel

        check_spaces(task, _nvec(policy.observation_space), _n(policy.action_space), flag)
        return SB3PolicyModel(task, policy)
    if type(policy).__module__.startswith("transformers.") and hasattr(policy, "config"):
        from agents.hf_lm import HFSequenceModel  # a PreTrainedModel over ntp_envs.hf words

        try:
            return HFSequenceModel(policy, task)
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None
    if isinstance(policy, th.nn.Module):
        return TorchLogitsModel(task, policy, causal, flag)
    raise ValueError(f"{flag}: cannot score a {type(policy).__name__}: give a SequenceModel, "
                     "an object with next_token_logprobs, an SB3 actor-critic policy or "
                     "algorithm, or a torch module mapping token contexts to logits")


# ------------------------------------------------------------------ spaces of saved policies


def _nvec(space: Any) -> list[int] | None:
    nvec = getattr(space, "nvec", None)
    return None if nvec is None else [int(v) for v in np.asarray(nvec).ravel()]


def _n(space: Any) -> int | None:
    n = getattr(space, "n", None)
    return None if n is None else int(n)


def _saved_int(value: Any, what: str, flag: str) -> int:
    """An integer read from a saved file (a whole number, JSON or numpy; text of one), or a
    one-line ValueError naming ``flag``."""
    if isinstance(value, str | np.str_):
        text = str(value).strip()
        if re.fullmatch(r"[+-]?\d{1,18}", text):
            return int(text)
    elif isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    elif isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return int(value)
    raise ValueError(f"{flag}: the saved {what} holds {str(value)[:40]!r}, not a whole number")


def _saved_nvec(value: Any, flag: str) -> list[int] | None:
    """A saved observation space's ``nvec`` (SB3's JSON text ``"[4 5 3]"`` or an array)."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > 2**16:
            raise ValueError(f"{flag}: the saved observation nvec is {len(value)} characters long")
        parts = value.strip().removeprefix("[").removesuffix("]").split()
    elif isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.size <= 2**16:
        parts = list(value.ravel())
    else:
        raise ValueError(f"{flag}: the saved observation nvec is a {type(value).__name__}, "
                         "not a list of whole numbers")
    return [_saved_int(v, "observation nvec", flag) for v in parts]


def _describe(nvec: list[int], prompt_length: int) -> str:
    """``horizon H, vocabulary V`` read from an env observation encoding ``nvec``."""
    for length in range(len(nvec)):
        horizon = len(nvec) - 1 - length
        if horizon >= 1 and nvec[length] == horizon + 1 and len(set(nvec[length + 1:])) == 1:
            return (f"prompt length {length}, horizon {horizon}, vocabulary "
                    f"{nvec[-1] - 1}")
    return f"observation nvec {nvec} (prompt length {prompt_length} expected)"


def check_spaces(task: SequenceTask, nvec: list[int] | None, n_actions: int | None,
                 flag: str) -> None:
    """One-line ValueError naming ``flag`` when a saved policy's observation or action space is
    not the task's env spaces (a different vocabulary, horizon or prompt law)."""
    expected = [int(v) for v in observation_space(task).nvec]
    if nvec is not None and nvec != expected:
        length = task.prompts.prompt_length
        raise ValueError(f"{flag}: the policy observes {_describe(nvec, length)}; the task "
                         f"{task.env_id} has {_describe(expected, length)}")
    if n_actions is not None and n_actions != task.vocab_size:
        raise ValueError(f"{flag}: the policy has {n_actions} actions, the task {task.env_id} "
                         f"has vocabulary {task.vocab_size}")


# --------------------------------------------------------------- reading without running code


class Opaque:
    """An object of a class the restricted unpickler does not build: its class name, the
    arguments it was built with and its state, inert."""

    qualname = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def get(self, name: str, default: Any = None) -> Any:
        """Attribute ``name`` of the recorded state (``__dict__``), or ``default``."""
        state = self.state[0] if isinstance(self.state, tuple) else self.state
        return state.get(name, default) if isinstance(state, dict) else default


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds tensors, numpy arrays and containers; every other global is an inert class."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module == "numpy.dtypes" and
                                               name.endswith("DType")):
            return super().find_class(module, name)
        return type(name, (Opaque,), {"qualname": f"{module}.{name}"})


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda file, **kw: _RestrictedUnpickler(file, **kw).load())


def restricted_torch_load(source: Any) -> Any:
    """``torch.load`` of ``source`` (path or file) that builds only tensors, numpy arrays and
    containers (:class:`Opaque` for anything else): no code from the file runs."""
    return th.load(source, map_location="cpu", weights_only=False,
                   pickle_module=_RestrictedPickleModule)  # type: ignore[arg-type]


MAX_MODULE_DEPTH = 64
"""Deepest nesting of submodules read from a pickled module."""


def _module_state(node: Any, prefix: str = "", depth: int = 0) -> dict[str, th.Tensor]:
    """The ``state_dict`` of a pickled ``nn.Module`` recorded as :class:`Opaque` objects."""
    out: dict[str, th.Tensor] = {}
    if depth > MAX_MODULE_DEPTH:
        raise ValueError(f"its modules nest deeper than {MAX_MODULE_DEPTH} ({prefix[:60]}...)")
    for group in ("_parameters", "_buffers"):
        for name, tensor in _entries(node.get(group)):
            if isinstance(tensor, th.Tensor):
                out[prefix + name] = tensor.detach()
    for name, child in _entries(node.get("_modules")):
        if isinstance(child, Opaque):
            out.update(_module_state(child, f"{prefix}{name}.", depth + 1))
    return out


def _entries(value: Any) -> list[tuple[str, Any]]:
    """The string-keyed items of a recorded dict (``[]`` for anything else)."""
    return [(k, v) for k, v in value.items() if isinstance(k, str)] if isinstance(
        value, dict) else []


_ACTIVATION = re.compile(r"torch\.nn\.modules\.activation\.(\w+)")


def _activation_name(value: Any) -> str | None:
    if isinstance(value, type) and issubclass(value, Opaque):
        value = value.qualname
    found = _ACTIVATION.search(str(value)) if value is not None else None
    return found.group(1) if found else None


def _widths(state: dict[str, th.Tensor], net: str, features: int, flag: str) -> list[int]:
    """The layer widths of ``mlp_extractor.{net}``, each layer taking the previous one's outputs
    (the first the task's ``features``): checked before any network is built."""
    layers = sorted((int(m.group(1)), key) for key in state
                    if (m := re.fullmatch(rf"mlp_extractor\.{net}\.(\d{{1,6}})\.weight", key)))
    widths: list[int] = []
    inputs = features
    for _, key in layers:
        shape = tuple(state[key].shape)
        if len(shape) != 2 or shape[1] != inputs:
            raise ValueError(f"{flag}: the saved layer {key} has shape {list(shape)}: it takes "
                             f"{shape[-1] if shape else 0} inputs, {inputs} expected (the task's "
                             f"observation encoding has {features} one-hot features: another "
                             "vocabulary, horizon or prompt law?)")
        widths.append(inputs := shape[0])
    return widths


def _check_state(state: Any, flag: str) -> dict[str, th.Tensor]:
    """``state`` if it is a state dict of finite floating-point tensors (at most 2-d), else a
    one-line ValueError naming ``flag``."""
    if not isinstance(state, dict):
        raise ValueError(f"{flag}: the saved state_dict is a {type(state).__name__}, not a dict "
                         "of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, th.Tensor):
            raise ValueError(f"{flag}: the saved state_dict maps {str(key)[:40]!r} to a "
                             f"{type(value).__name__}, not a tensor")
        if not value.is_floating_point() or value.dim() not in (1, 2):
            raise ValueError(f"{flag}: the saved weight {key!r} is a {value.dim()}-d "
                             f"{value.dtype} tensor, not a 1-d or 2-d float one")
        if not bool(th.isfinite(value).all()):
            raise ValueError(f"{flag}: the saved weight {key!r} is not finite")
    return state


def _actor_critic(task: SequenceTask, state: dict[str, th.Tensor], activation: str | None,
                  flag: str) -> Any:
    """An SB3 ``ActorCriticPolicy`` on the task's spaces with the saved weights."""
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import FlattenExtractor

    from agents.sb3_policy import ACTIVATIONS

    state = _check_state(state, flag)
    if "action_net.weight" not in state:
        raise ValueError(f"{flag}: the saved weights are not an SB3 actor-critic policy's "
                         f"(no action_net; keys {sorted(state)[:6]})")
    activation = activation or "Tanh"
    if activation not in ACTIVATIONS:
        raise ValueError(f"{flag}: activation {activation!r} is not one of {ACTIVATIONS}")
    n_actions = int(state["action_net.weight"].shape[0])
    check_spaces(task, None, n_actions, flag)
    features = int(np.sum(observation_space(task).nvec))
    policy = ActorCriticPolicy(
        observation_space(task), spaces.Discrete(task.vocab_size), lr_schedule=lambda _: 0.0,
        net_arch={"pi": _widths(state, "policy_net", features, flag),
                  "vf": _widths(state, "value_net", features, flag)},
        activation_fn=getattr(th.nn, activation), features_extractor_class=FlattenExtractor)
    expected = policy.state_dict()
    wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if wrong or set(state) - set(expected):
        first = wrong[0] if wrong else sorted(set(state) - set(expected))[0]
        width = int(expected["mlp_extractor.policy_net.0.weight"].shape[1]) if (
            "mlp_extractor.policy_net.0.weight" in expected) else None
        raise ValueError(f"{flag}: the saved weights do not fit the task's env (first "
                         f"mismatch {first!r}; the task's observation encoding has {width} "
                         "one-hot features: another vocabulary, horizon or prompt law?)")
    policy.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return policy


MAX_SB3_DATA_BYTES = 2**24
"""Most bytes an SB3 ``.zip``'s JSON ``data`` entry may inflate to (16 MiB; SB3 writes KiBs)."""


def _load_sb3_zip(task: SequenceTask, path: Path, flag: str) -> Any:
    try:
        with zipfile.ZipFile(path) as zipped:
            names = set(zipped.namelist())
            if not {"data", "policy.pth"} <= names:
                raise ValueError(f"{flag}: {path} is a zip but not an SB3 model (needs data and "
                                 f"policy.pth, has {sorted(names)[:8]})")
            check_inflated_size(zipped, archive.MAX_POLICY_BYTES, {"data": MAX_SB3_DATA_BYTES})
            with zipped.open("data") as handle:
                text = handle.read(zipped.getinfo("data").file_size)
            with zipped.open("policy.pth") as handle:
                try:
                    state = th.load(handle, map_location="cpu", weights_only=True)
                except Exception as err:  # noqa: BLE001 - a refused or damaged pickle
                    raise ValueError(f"{flag}: {path}: its policy.pth is not a file of weights "
                                     f"({type(err).__name__}: {_first_line(err)})") from None
            if not isinstance(state, dict):
                raise ValueError(f"{flag}: {path}: its policy.pth holds a "
                                 f"{type(state).__name__}, not a state dict of weights")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        raise ValueError(f"{flag}: {path} is a damaged zip ({type(err).__name__}: "
                         f"{_first_line(err)})") from None
    except ValueError as err:
        if str(err).startswith(flag):
            raise
        raise ValueError(f"{flag}: {path}: {err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{flag}: {path}: its data entry is not JSON ({err})") from None
    spaces = {k: data.get(k) or {} for k in ("observation_space", "action_space",
                                             "policy_kwargs")} if isinstance(data, dict) else {}
    if not spaces or not all(isinstance(v, dict) for v in spaces.values()):
        raise ValueError(f"{flag}: {path}: its data entry does not describe an SB3 model (an "
                         "object whose observation_space, action_space and policy_kwargs are "
                         "objects)")
    n = spaces["action_space"].get("n")
    check_spaces(task, _saved_nvec(spaces["observation_space"].get("nvec"), flag),
                 None if n is None else _saved_int(n, "action space n", flag), flag)
    activation = _activation_name(spaces["policy_kwargs"].get("activation_fn"))
    return _actor_critic(task, state, activation, flag)


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    return (str(err).strip().splitlines() or [""])[0][:200]


def _load_torch_policy(task: SequenceTask, path: Path, flag: str) -> Any:
    size = path.stat().st_size
    if size > archive.MAX_POLICY_BYTES:
        raise ValueError(f"{flag}: {path} holds {size} bytes, at most "
                         f"{archive.MAX_POLICY_BYTES} bytes allowed for a policy file")
    try:
        if zipfile.is_zipfile(path):  # torch's own format: a zip of the pickle and tensors
            with zipfile.ZipFile(path) as zipped:
                check_inflated_size(zipped, archive.MAX_POLICY_BYTES)
        saved = restricted_torch_load(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes one line
        raise ValueError(f"{flag}: {path} is not a torch-saved policy ({type(err).__name__}: "
                         f"{_first_line(err)})") from None
    if isinstance(saved, dict) and "state_dict" in saved:  # SB3 BasePolicy.save
        state, data = saved["state_dict"], saved.get("data")
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ValueError(f"{flag}: {path}: its data is a {type(data).__name__}, not the "
                             "dict SB3's policy.save writes")
        activation = _activation_name(data.get("activation_fn"))
        obs, act = data.get("observation_space"), data.get("action_space")
    elif isinstance(saved, Opaque):  # a whole pickled module (imitation's save_policy)
        try:
            state = _module_state(saved)
        except ValueError as err:
            raise ValueError(f"{flag}: {path}: {err}") from None
        activation = _activation_name(saved.get("activation_fn"))
        obs, act = saved.get("observation_space"), saved.get("action_space")
    else:
        raise ValueError(f"{flag}: {path} holds a {type(saved).__name__}, not a saved policy")
    nvec = obs.get("nvec") if isinstance(obs, Opaque) else None
    n = act.get("n") if isinstance(act, Opaque) else None
    if isinstance(nvec, th.Tensor):
        nvec = nvec.numpy()
    check_spaces(task, _saved_nvec(nvec, flag),
                 None if n is None else _saved_int(n, "action space n", flag), flag)
    return _actor_critic(task, state, activation, flag)


def load_policy_file(path: str | os.PathLike[str], task: SequenceTask | None,
                     flag: str = "policy") -> tuple[SequenceModel, SequenceTask, str]:
    """``(model, task, kind)`` of a saved policy (module doc). ``task`` is required except for
    a suite ``.npz`` archive, which names its own task (when given, it must match)."""
    path = Path(path)
    if path.is_dir():  # a transformers save_pretrained directory (safetensors only)
        from agents.hf_lm import load_pretrained

        policy = load_pretrained(path, task, flag)
        return as_sequence_model(policy.task, policy, flag=flag), policy.task, "hf-pretrained"
    if not path.is_file():
        raise ValueError(f"{flag}: no such file {str(path)!r}")
    if path.suffix == ".npz":
        from agents.base import load_policy

        try:
            policy = load_policy(path, task)  # the file's task: never built from its metadata
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None
        return as_sequence_model(policy.task, policy, flag=flag), policy.task, "suite"
    if task is None:
        raise ValueError(f"{flag}: {path.name} does not name its task: give --env")
    kind = "sb3-zip" if zipfile.is_zipfile(path) and path.suffix == ".zip" else "torch-policy"
    try:
        if kind == "sb3-zip":
            model = _load_sb3_zip(task, path, flag)
        else:
            model = _load_torch_policy(task, path, flag)
        return as_sequence_model(task, model, flag=flag), task, kind
    except (AttributeError, TypeError, IndexError, KeyError, OverflowError, RecursionError,
            RuntimeError) as err:  # a file shaped in a way no check above foresaw
        raise ValueError(f"{flag}: {path} is not a readable policy ({type(err).__name__}: "
                         f"{_first_line(err)})") from None
