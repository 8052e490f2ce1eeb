"""Fuzzing the public surface: env kwargs, actions, dataset contents, CLI arguments.

Every rejection must be a ValueError or TypeError with a message; whatever is accepted must
work (a valid env episode, a normalised fitted policy, a checked sweep plan).
"""

from __future__ import annotations

import inspect
import json
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ntp_envs
from agents import LogLossBC, agent_names
from evaluation.cli import UsageError, plan_sweep
from evaluation.experiments.presets import preset_names
from experts.demonstrations import Demonstrations
from ntp_envs import make_task, registered_env_ids

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REJECTIONS = (ValueError, TypeError)

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 1.0), st.text(max_size=6),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4),
                   st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))


def _env_arguments(env_id: str) -> list[str]:
    """The keyword arguments of the env's constructor (those a user can pass)."""
    module, name = ntp_envs.ENTRY_POINTS[env_id].split(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "render_mode")]


def _rejected(err: BaseException) -> None:
    event(f"rejected: {type(err).__name__}")
    assert isinstance(err, REJECTIONS), f"{type(err).__name__}: {err}"
    assert str(err).strip(), f"{type(err).__name__} without a message"


def _check_episode(env: gym.Env, steps: int = 3) -> None:
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(min(steps, env.unwrapped.task.horizon)):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert type(reward) is float and not math.isnan(reward)
        assert type(terminated) is bool and truncated is False


@pytest.mark.parametrize("env_id", registered_env_ids())
def test_fuzz_env_kwargs(env_id: str) -> None:
    names = _env_arguments(env_id)
    keys = st.sampled_from([*names, "not_an_argument"])

    @FUZZ
    @given(kwargs=st.dictionaries(keys, VALUES, max_size=4))
    def check(kwargs: dict) -> None:
        horizon = kwargs.get("horizon")
        if isinstance(horizon, int) and not isinstance(horizon, bool) and horizon > 0:
            kwargs["horizon"] = horizon % 4096  # accepted envs stay quick to step; the cap on
            # H has its own test below
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env = gym.make(env_id, **kwargs)
        except Exception as err:  # noqa: BLE001 - the property under test
            _rejected(err)
            return
        _check_episode(env)
        env.close()

    check()


@pytest.mark.parametrize("env_id", registered_env_ids())
def test_horizon_beyond_the_cap_is_a_value_error(env_id: str) -> None:
    with pytest.raises(ValueError, match="horizon"):
        make_task(env_id, horizon=10**12)


ACTIONS = st.one_of(
    st.integers(-(2**70), 2**70), st.integers(-2, 70), st.floats(allow_nan=True), st.none(),
    st.text(max_size=3), st.booleans(), st.lists(st.integers(-1, 3), max_size=3),
    hnp.arrays(st.sampled_from([np.int64, np.int8, np.uint16, np.float32, np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
)


@pytest.mark.parametrize("env_id", registered_env_ids())
def test_fuzz_actions(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)

    @FUZZ
    @given(action=ACTIONS)
    def check(action: object) -> None:
        if env.unwrapped._done:
            env.reset(seed=1)
        position = env.unwrapped._h
        try:
            obs, reward, _, _, info = env.step(action)
        except Exception as err:  # noqa: BLE001 - the property under test
            _rejected(err)
            assert env.unwrapped._h == position  # a rejected action changes nothing
            return
        assert env.action_space.contains(int(np.asarray(action).reshape(())))
        assert env.observation_space.contains(obs) and info["position"] == position + 1
        assert type(reward) is float

    check()


def _dataset_arrays(task_horizon: int) -> st.SearchStrategy:
    ints = st.sampled_from([np.int64, np.int32, np.uint8, np.int16])
    dtypes = st.one_of(ints, st.sampled_from([np.float64, np.bool_]))
    shapes = st.one_of(st.just((6, task_horizon)),
                       hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))
    return st.fixed_dictionaries({
        "prompts": hnp.arrays(dtypes, st.one_of(st.just((6, 1)), shapes)),
        "tokens": hnp.arrays(dtypes, shapes),
        "expert_logprobs": hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64]),
                                      shapes),
        "vocab_size": st.one_of(st.integers(-1, 5), st.floats(0, 5), st.none()),
    })


@pytest.mark.parametrize("env_id", ["ntp_envs/ARLinear-v0", "ntp_envs/FiniteClassBarrier-v0"])
def test_fuzz_dataset_contents(env_id: str) -> None:
    task = make_task(env_id, horizon=4)

    @FUZZ
    @given(fields=_dataset_arrays(task.horizon), clip=st.booleans())
    def check(fields: dict, clip: bool) -> None:
        if clip:  # push many examples into the valid region, to fit as well as reject
            for name, high in (("prompts", task.prompt_vocab_size), ("tokens", task.vocab_size)):
                arr = fields[name]
                if arr.dtype.kind in "iu":
                    fields[name] = np.mod(arr.astype(np.int64), high)
            fields["expert_logprobs"] = -np.abs(np.nan_to_num(
                fields["expert_logprobs"].astype(np.float64), posinf=1.0, neginf=1.0))
            fields["vocab_size"] = task.vocab_size
        try:
            demos = Demonstrations(env_id, dict(task.params), **fields)
            policy = LogLossBC().fit(task, demos)
        except Exception as err:  # noqa: BLE001 - the property under test
            _rejected(err)
            return
        # accepted: the fit is a proper policy on every prompt and prefix it saw
        prompts, tokens = demos.prompts, demos.tokens
        for h in range(task.horizon):
            logp = policy.next_token_logprobs(prompts, tokens[:, :h])
            assert not np.isnan(logp).any() and (logp <= 0).all()  # -inf: a zero-mass token
            np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-9)

    check()


FLAG_VALUES = {
    "--preset": st.sampled_from([*preset_names(), "nope", ""]),
    "--env": st.sampled_from([*registered_env_ids(), "ntp_envs/Nope-v0", "", "ARLinear"]),
    "--env-kwargs": st.one_of(
        st.dictionaries(st.sampled_from(["misspecification", "weight", "horizon", "vocab_size",
                                         "p0", "bias", "num_contexts", "foo"]),
                        VALUES, max_size=3).map(lambda d: json.dumps(d, default=str)),
        st.text(max_size=8)),
    "--agents": st.lists(st.sampled_from([*agent_names(), "nope", " ", ""]), max_size=3)
    .map(",".join),
    "--horizons": st.one_of(
        st.lists(st.integers(-3, 10**13), max_size=4).map(lambda hs: ",".join(map(str, hs))),
        st.text(alphabet="0123456789,- x", max_size=8)),
    "--seeds": st.one_of(st.integers(-2, 10**6).map(str), st.text(max_size=4)),
    "--n-train": st.one_of(st.integers(-2, 10**10).map(str), st.text(max_size=4)),
    "--eval-samples": st.one_of(st.integers(-2, 10**10).map(str), st.just("1e3")),
    "--oracle-starts": st.integers(-2, 10**6).map(str),
    "--backend": st.sampled_from(["local", "ray", "serial", "spark", ""]),
    "--workers": st.one_of(st.integers(-2, 5000).map(str), st.text(max_size=3)),
    "--address": st.sampled_from(["auto", "", "127.0.0.1:6379"]),
}
SWITCHES = ["--population", "--quiet", "--bogus", "-x"]


@st.composite
def sweep_argv(draw: st.DrawFn) -> list[str]:
    argv: list[str] = []
    for flag in draw(st.lists(st.sampled_from([*FLAG_VALUES, *SWITCHES]), max_size=6)):
        argv.append(flag)
        if flag in FLAG_VALUES and draw(st.integers(0, 9)):  # sometimes the value is missing
            argv.append(draw(FLAG_VALUES[flag]))
    return argv


@FUZZ
@given(argv=sweep_argv())
def test_fuzz_cli_arguments(argv: list[str]) -> None:
    assume("--help" not in argv and "-h" not in argv)
    try:
        plan = plan_sweep([*argv, "--out", "/nonexistent/never-written"])
    except Exception as err:  # noqa: BLE001 - the property under test
        _rejected(err)
        assert isinstance(err, UsageError), f"{type(err).__name__}: {err}"
        return
    assert plan.configs and all(c.horizons and c.seeds >= 1 for c in plan.configs)
    for config in plan.configs:  # every task of an accepted plan builds
        for horizon in config.horizons:
            make_task(config.env_id, **{**config.env_kwargs, "horizon": horizon})
