"""Expert policies and demonstrations: same law as env rollouts, storage, imitation interop."""

from __future__ import annotations

import io
import itertools
import json
import os
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from imitation.algorithms import bc, dagger
from imitation.data import rollout
from imitation.data.wrappers import RolloutInfoWrapper
from scipy import stats
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import LogLossBC
from experts import (
    Demonstrations,
    ExpertPolicy,
    ImitationExpert,
    as_sb3_policy,
    collect_demonstrations,
)
from ntp_envs import make_task
from ntp_envs.base import decode_observations, encode_observations

AR_LINEAR = "ntp_envs/ARLinear-v0"
TINY = {"horizon": 4, "vocab_size": 2, "num_contexts": 2, "task_seed": 3}
SMALL = {"horizon": 8, "vocab_size": 3, "num_contexts": 3, "learner_memory": 1,
         "expert_memory": 2}
P_VALUE_FLOOR = 1e-4  # fixed seeds make every p-value below deterministic


def _env_episodes(env: gym.Env, policy: ExpertPolicy, n: int, seed: int) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]
]:
    """Prompts, tokens, rewards ``(n, H)`` and observations of ``n`` env episodes."""
    task = env.unwrapped.task
    prompts = np.empty((n, task.prompts.prompt_length), dtype=np.int64)
    tokens = np.empty((n, task.horizon), dtype=np.int64)
    rewards = np.empty((n, task.horizon))
    observations = []
    for i in range(n):
        obs, info = env.reset(seed=seed if i == 0 else None)
        prompts[i] = info["prompt"]
        episode_obs = [obs]
        for h in range(task.horizon):
            action, _ = policy.predict(obs)
            obs, rewards[i, h], terminated, _, _ = env.step(action)
            tokens[i, h] = action
            episode_obs.append(obs)
            assert terminated == (h == task.horizon - 1)
        observations.append(np.stack(episode_obs))
    return prompts, tokens, rewards, observations


def _outcome_index(prompts: np.ndarray, tokens: np.ndarray, vocab: int) -> np.ndarray:
    """One integer per (prompt, sequence) outcome."""
    digits = vocab ** np.arange(tokens.shape[1])
    return prompts[:, 0] * vocab ** tokens.shape[1] + tokens @ digits


def _exact_law(task) -> np.ndarray:  # noqa: ANN001
    """``P*(x, a_{1:H})`` over every outcome, in :func:`_outcome_index` order."""
    seqs = np.array(list(itertools.product(range(task.vocab_size), repeat=task.horizon)))
    seqs = seqs[:, ::-1]  # first token = least significant digit
    probs = []
    for c in range(task.prompts.num_contexts):
        prompts = np.full((len(seqs), 1), c)
        logp = task.prompts.log_probs[c] + task.expert.sequence_logprob(prompts, seqs)
        order = np.argsort(_outcome_index(prompts, seqs, task.vocab_size))
        probs.append(np.exp(logp[order]))
    return np.concatenate(probs)


def _two_sample_p(a: np.ndarray, b: np.ndarray, size: int) -> float:
    table = np.stack([np.bincount(a, minlength=size), np.bincount(b, minlength=size)])
    return float(stats.chi2_contingency(table[:, table.sum(axis=0) > 0])[1])


def _goodness_p(sample: np.ndarray, probs: np.ndarray) -> float:
    counts = np.bincount(sample, minlength=len(probs))
    return float(stats.chisquare(counts, probs * len(sample))[1])


@pytest.fixture(scope="module")
def tiny_samples() -> dict[str, np.ndarray]:
    env = gym.make(AR_LINEAR, **TINY)
    task = env.unwrapped.task
    demos = collect_demonstrations(task, 20_000, seed=0)
    prompts, tokens, _, _ = _env_episodes(env, ExpertPolicy(task, seed=1), 3_000, seed=2)
    return {
        "batched": _outcome_index(demos.prompts, demos.tokens, 2),
        "env": _outcome_index(prompts, tokens, 2),
        "exact": _exact_law(task),
    }


def test_batched_sampler_and_env_rollouts_share_a_law(tiny_samples: dict) -> None:
    size = len(tiny_samples["exact"])
    assert size == 2 * 2**4
    assert _two_sample_p(tiny_samples["batched"], tiny_samples["env"], size) > P_VALUE_FLOOR
    assert _goodness_p(tiny_samples["batched"], tiny_samples["exact"]) > P_VALUE_FLOOR
    assert _goodness_p(tiny_samples["env"], tiny_samples["exact"]) > P_VALUE_FLOOR


def test_law_test_has_power(tiny_samples: dict) -> None:
    """The same test rejects a different expert (another ``task_seed``)."""
    other = collect_demonstrations(make_task(AR_LINEAR, **{**TINY, "task_seed": 4}), 20_000, 0)
    other_index = _outcome_index(other.prompts, other.tokens, 2)
    size = len(tiny_samples["exact"])
    assert _two_sample_p(other_index, tiny_samples["env"], size) < P_VALUE_FLOOR
    assert _goodness_p(other_index, tiny_samples["exact"]) < P_VALUE_FLOOR


@pytest.mark.parametrize("kwargs", [{}, SMALL], ids=["default", "small"])
def test_log_likelihood_equals_token_sum_equals_return(kwargs: dict) -> None:
    env = gym.make(AR_LINEAR, **kwargs)
    task = env.unwrapped.task
    prompts, tokens, rewards, _ = _env_episodes(env, ExpertPolicy(task, seed=0), 5, seed=0)
    token_logp = task.expert.token_logprobs(prompts, tokens)
    np.testing.assert_allclose(rewards, token_logp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rewards.sum(axis=1), task.expert.sequence_logprob(prompts, tokens),
                               rtol=0, atol=1e-9)
    # batched demonstrations against an independent reading of the expert's tables
    demos = collect_demonstrations(task, 40, seed=1)
    tables = task.expert.finite_state()
    ctx = task.prompts.index_of(demos.prompts)
    manual = np.empty(demos.tokens.shape)
    for i, h in itertools.product(range(len(demos)), range(task.horizon)):
        window = demos.tokens[i, max(0, h - tables.memory):h][::-1]
        state = int(sum(int(a) * task.vocab_size**j for j, a in enumerate(window)))
        manual[i, h] = tables.at_position(h)[ctx[i], state, demos.tokens[i, h]]
    np.testing.assert_allclose(demos.expert_logprobs, manual, rtol=0, atol=1e-12)
    np.testing.assert_allclose(demos.sequence_logprobs(),
                               task.expert.sequence_logprob(demos.prompts, demos.tokens),
                               rtol=0, atol=1e-9)


def test_collect_is_seeded() -> None:
    task = make_task(AR_LINEAR, **SMALL)
    a, b = collect_demonstrations(task, 50, 7), collect_demonstrations(task, 50, 7)
    c = collect_demonstrations(task, 50, 8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    assert a.env_id == AR_LINEAR and a.vocab_size == 3 and a.horizon == 8
    assert make_task(a.env_id, **a.env_kwargs).params == task.params
    with pytest.raises(ValueError, match="n"):
        collect_demonstrations(task, 0, 0)


def test_expert_policy_predict_semantics() -> None:
    task = make_task(AR_LINEAR, **SMALL)
    policy = ExpertPolicy(task, seed=0)
    demos = collect_demonstrations(task, 6, seed=0)
    obs = demos.observations()  # (n, H + 1, D)
    batch = obs[np.arange(6), np.array([0, 3, 3, 7, 1, 0])]  # mixed positions
    logp = policy.action_logprobs(batch)
    assert logp.shape == (6, task.vocab_size)
    for row, ob in zip(logp, batch, strict=True):
        prompt, (h,), padded = decode_observations(task, ob)
        expected = task.expert.next_token_logprobs(prompt, padded[:, :h])[0]
        np.testing.assert_array_equal(row, expected)
    actions, state = policy.predict(batch, state=None, deterministic=True)
    assert state is None and actions.shape == (6,) and actions.dtype == np.int64
    np.testing.assert_array_equal(actions, logp.argmax(axis=1))
    single, _ = policy.predict(batch[1])
    assert single.shape == () and 0 <= int(single) < task.vocab_size
    sampled = np.stack([policy.predict(batch)[0] for _ in range(3000)])
    freq = np.stack([np.bincount(col, minlength=task.vocab_size) for col in sampled.T]) / 3000
    np.testing.assert_allclose(freq, np.exp(logp), atol=0.05)
    with pytest.raises(ValueError, match="position"):
        policy.predict(obs[0, -1])  # end of episode: no next token
    with pytest.raises(ValueError, match="shape"):
        policy.predict(batch[:, :-1])


def _venv(kwargs: dict, num_envs: int, seed: int) -> DummyVecEnv:
    venv = DummyVecEnv([lambda: RolloutInfoWrapper(gym.make(AR_LINEAR, **kwargs))] * num_envs)
    venv.seed(seed)
    return venv


def test_imitation_rollout_with_expert() -> None:
    venv = _venv(SMALL, num_envs=3, seed=0)
    task = make_task(AR_LINEAR, **SMALL)
    expert = as_sb3_policy(task.expert, task, seed=0, env=venv)
    assert isinstance(expert, ImitationExpert)
    trajs = rollout.rollout(expert, venv, rollout.make_sample_until(min_episodes=10),
                            rng=np.random.default_rng(0))
    assert len(trajs) >= 10
    length = task.prompts.prompt_length
    for traj in trajs:
        assert len(traj) == task.horizon and traj.terminal
        assert traj.obs.shape == (task.horizon + 1, *venv.observation_space.shape)
        assert all(ob in venv.observation_space for ob in traj.obs)
        prompt = traj.obs[:1, :length]
        expected_obs = [encode_observations(task, prompt, traj.acts[None, :h])[0]
                        for h in range(task.horizon + 1)]
        np.testing.assert_array_equal(traj.obs, np.stack(expected_obs))
        np.testing.assert_allclose(traj.rews.sum(),
                                   task.expert.sequence_logprob(prompt, traj.acts[None])[0],
                                   rtol=0, atol=1e-5)  # RolloutInfoWrapper keeps float32 rews
    single, _ = expert.predict(trajs[0].obs[0])
    assert single.shape == ()
    batch, _ = expert.predict(trajs[0].obs[:-1], deterministic=True)
    logp = expert.expert.action_logprobs(trajs[0].obs[:-1])
    np.testing.assert_array_equal(batch, logp.argmax(axis=1))
    tiny = make_task(AR_LINEAR, **TINY)
    with pytest.raises(ValueError, match="env spaces .* must be the task's"):
        as_sb3_policy(tiny.expert, tiny, env=_venv(SMALL, 1, 0))


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_simple_dagger_accepts_expert(tmp_path: Path) -> None:
    venv = _venv(TINY, num_envs=2, seed=0)
    rng = np.random.default_rng(0)
    task = make_task(AR_LINEAR, **TINY)
    expert = as_sb3_policy(task.expert, task, seed=0, env=venv)
    trainer = bc.BC(observation_space=venv.observation_space, action_space=venv.action_space,
                    rng=rng)
    dagger_trainer = dagger.SimpleDAggerTrainer(venv=venv, scratch_dir=tmp_path,
                                                expert_policy=expert, bc_trainer=trainer, rng=rng)
    total, min_timesteps, horizon = 80, 8, TINY["horizon"]
    dagger_trainer.train(total, rollout_round_min_episodes=2,
                         rollout_round_min_timesteps=min_timesteps,
                         bc_train_kwargs={"n_batches": 2, "progress_bar": False})
    # a round steps both envs through whole episodes until it holds max(min_timesteps, BC's
    # batch size) steps; rounds run until `total` steps (here 3 rounds of 8 episodes)
    per_round = -(-max(min_timesteps, trainer.batch_size) // (2 * horizon)) * 2 * horizon
    assert dagger_trainer.round_num == -(-total // per_round)
    rounds = sorted((tmp_path / "demos").iterdir())
    assert [len(list(r.glob("*.npz"))) for r in rounds] == [per_round // horizon] * 3


def test_to_trajectories_and_transitions() -> None:
    env = gym.make(AR_LINEAR, **SMALL)
    task = env.unwrapped.task
    prompts, tokens, rewards, observations = _env_episodes(env, ExpertPolicy(task, 0), 4, seed=9)
    demos = Demonstrations(AR_LINEAR, dict(SMALL), prompts, tokens, rewards, task.vocab_size)
    trajs = demos.to_trajectories()
    assert len(trajs) == 4
    for traj, obs, acts, rews in zip(trajs, observations, tokens, rewards, strict=True):
        assert traj.obs.shape == (task.horizon + 1, env.observation_space.shape[0])
        np.testing.assert_array_equal(traj.obs, obs)  # the env's own observations
        np.testing.assert_array_equal(traj.acts, acts)
        np.testing.assert_array_equal(traj.rews, rews)
        assert traj.terminal and traj.infos is None
    transitions = demos.to_transitions()
    assert len(transitions) == 4 * task.horizon
    np.testing.assert_array_equal(transitions.acts, tokens.ravel())
    assert transitions.dones.sum() == 4 and transitions.dones[task.horizon - 1]
    np.testing.assert_array_equal(decode_observations(task, transitions.obs)[1],
                                  np.tile(np.arange(task.horizon), 4))


def test_save_load_round_trip(tmp_path: Path) -> None:
    task = make_task(AR_LINEAR, **SMALL)
    demos = collect_demonstrations(task, 30, seed=0)
    for compress in (False, True):
        path = tmp_path / f"demos-{compress}.npz"
        demos.save(path, compress=compress)
        loaded = Demonstrations.load(path)
        assert (loaded.env_id, loaded.env_kwargs, loaded.vocab_size) == (
            demos.env_id, demos.env_kwargs, demos.vocab_size)
        for name in ("prompts", "tokens", "expert_logprobs"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(demos, name))
            assert getattr(loaded, name).dtype == getattr(demos, name).dtype
        assert loaded.task().params == task.params
        np.testing.assert_array_equal(loaded.observations(), demos.observations())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos-False.npz", "demos-True.npz"]


def _write_npz(path: Path, meta: object, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, metadata=np.array(json.dumps(meta)), **arrays)


def _good(task_kwargs: dict = SMALL) -> tuple[dict, dict]:
    demos = collect_demonstrations(make_task(AR_LINEAR, **task_kwargs), 5, seed=0)
    meta = {"format": "ntp-gym/demonstrations", "version": 1, "env_id": demos.env_id,
            "env_kwargs": demos.env_kwargs, "vocab_size": demos.vocab_size}
    arrays = {"prompts": demos.prompts, "tokens": demos.tokens,
              "expert_logprobs": demos.expert_logprobs}
    return meta, arrays


def test_hand_written_npz_loads(tmp_path: Path) -> None:
    meta, arrays = _good()
    _write_npz(tmp_path / "ok.npz", meta, **arrays)
    assert len(Demonstrations.load(tmp_path / "ok.npz")) == 5
    with open(tmp_path / "bytes.npz", "wb") as fh:  # metadata as UTF-8 bytes
        np.savez(fh, metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    assert len(Demonstrations.load(tmp_path / "bytes.npz")) == 5


@pytest.mark.parametrize("cut", ["head", "half", "tail"])
def test_truncated_file_raises(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "d.npz"
    collect_demonstrations(make_task(AR_LINEAR, **SMALL), 20, seed=0).save(path)
    data = path.read_bytes()
    keep = {"head": 10, "half": len(data) // 2, "tail": len(data) - 10}[cut]
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="not a valid demonstrations file"):
        Demonstrations.load(path)


def test_foreign_files_raise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "random.npz").write_bytes(rng.bytes(4096))
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.arange(5))
    meta, arrays = _good()
    needs_pickle = {**arrays, "tokens": arrays["tokens"].astype(object)}
    _write_npz(tmp_path / "object.npz", meta, **needs_pickle)
    np.savez(tmp_path / "foreign.npz", x=np.arange(3))
    _write_npz(tmp_path / "format.npz", {**meta, "format": "something-else"}, **arrays)
    _write_npz(tmp_path / "notjson.npz", "}", **arrays)
    with open(tmp_path / "badmeta.npz", "wb") as fh:
        np.savez(fh, metadata=np.arange(3.0), **arrays)
    for name in ["random.npz", "empty.npz", "array.npy", "object.npz", "foreign.npz",
                 "format.npz", "notjson.npz", "badmeta.npz"]:
        with pytest.raises(ValueError, match="not a valid demonstrations file"):
            Demonstrations.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        Demonstrations.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"expert_logprobs": "drop-last-column"}, "expert_logprobs"),
        ({"tokens": "add-vocab"}, "tokens"),
        ({"tokens": "negative"}, "tokens"),
        ({"tokens": "float"}, "tokens"),
        ({"prompts": "drop-row"}, "tokens"),
        ({"prompts": "empty"}, "prompts"),
        ({"expert_logprobs": "positive"}, "expert_logprobs"),
        ({"meta": "vocab_size"}, "vocab_size"),
        ({"meta": "env_kwargs"}, "env_kwargs"),
    ],
)
def test_bad_contents_raise(tmp_path: Path, change: dict, field: str) -> None:
    meta, arrays = _good()
    (key, how), = change.items()
    if key == "meta":
        meta = {**meta, how: "oops" if how == "vocab_size" else [1, 2]}
    else:
        arr = arrays[key]
        arrays[key] = {
            "drop-last-column": arr[:, :-1],
            "add-vocab": arr + meta["vocab_size"],
            "negative": arr - meta["vocab_size"],
            "float": arr.astype(np.float64),
            "drop-row": arr[1:],
            "empty": arr[:0],
            "positive": arr + 10.0,
        }[how]
        if how == "empty":
            arrays = {k: v[:0] for k, v in arrays.items()}
    _write_npz(tmp_path / "bad.npz", meta, **arrays)
    with pytest.raises(ValueError, match=field):
        Demonstrations.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=field):  # the constructor checks the same
        Demonstrations(meta["env_id"], meta["env_kwargs"], vocab_size=meta["vocab_size"],
                       **arrays)


def test_constructor_rejects_bad_metadata() -> None:
    _, arrays = _good()
    with pytest.raises(ValueError, match="env_id"):
        Demonstrations("", {}, vocab_size=3, **arrays)
    with pytest.raises(ValueError, match="env_kwargs"):
        Demonstrations(AR_LINEAR, {"x": object()}, vocab_size=3, **arrays)
    with pytest.raises(ValueError, match="vocab_size"):
        Demonstrations(AR_LINEAR, {}, vocab_size=0, **arrays)
    demos = Demonstrations(AR_LINEAR, dict(SMALL), vocab_size=3, **arrays)
    with pytest.raises(ValueError):  # arrays are read-only: the dataclass is frozen
        demos.tokens[0, 0] = 1


def test_failed_save_leaves_target_untouched(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    demos = collect_demonstrations(make_task(AR_LINEAR, **SMALL), 20, seed=0)
    target = tmp_path / "d.npz"
    target.write_bytes(b"previous contents")

    def broken_savez(file, **arrays) -> None:  # noqa: ANN001
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        demos.save(target)
    with pytest.raises(OSError, match="disk full"):
        demos.save(tmp_path / "new.npz")
    assert target.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["d.npz"]  # no temp file, no half-written new file
    monkeypatch.undo()
    demos.save(target)
    assert len(Demonstrations.load(target)) == 20


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("env_id", "env_id must be one of"),
        ("unknown kwarg", "unknown keyword argument"),
        ("bad kwarg", "misspecification must be"),
        ("kwargs change the horizon", r"does not match the demonstrations \(H=8"),
        ("kwargs change the vocabulary", r"V=2, L=1\) does not match"),
        ("-inf log-probability", "expert_logprobs must be finite"),
    ],
)
def test_load_validates_the_env_and_log_probabilities(tmp_path: Path, case: str,
                                                      problem: str) -> None:
    meta, arrays = _good()
    kwargs = meta["env_kwargs"]
    if case == "env_id":
        meta["env_id"] = "ntp_envs/Nope-v0"
    elif case == "unknown kwarg":
        meta["env_kwargs"] = {**kwargs, "colour": "red"}
    elif case == "bad kwarg":
        meta["env_kwargs"] = {**kwargs, "misspecification": 7.0}
    elif case == "kwargs change the horizon":
        meta["env_kwargs"] = {**kwargs, "horizon": 6}
    elif case == "kwargs change the vocabulary":
        meta["env_kwargs"] = {**kwargs, "vocab_size": 2}
        arrays["tokens"] = arrays["tokens"] % 2  # in range for V = 2: only the env can tell
    else:
        arrays["expert_logprobs"] = arrays["expert_logprobs"].copy()
        arrays["expert_logprobs"][0, 0] = -np.inf
    _write_npz(tmp_path / "bad.npz", meta, **arrays)
    with pytest.raises(ValueError, match=f"is not a valid demonstrations file: .*{problem}"):
        Demonstrations.load(tmp_path / "bad.npz")


MIXTURE = "ntp_envs/MixtureProduct-v0"
BARRIER = "ntp_envs/FiniteClassBarrier-v0"


def test_fit_refuses_another_tasks_demonstrations() -> None:
    barrier = make_task(BARRIER, horizon=8)
    mixture_demos = collect_demonstrations(make_task(MIXTURE, horizon=8), 50, seed=0)
    with pytest.raises(ValueError, match=f"come from env {MIXTURE}, not the task's {BARRIER}"):
        LogLossBC().fit(barrier, mixture_demos)
    # the same env with other kwargs: another instance, refused naming the differing kwarg
    mixture = make_task(MIXTURE, horizon=8)
    other = collect_demonstrations(make_task(MIXTURE, horizon=8, weight=0.3), 50, seed=0)
    differ = r"another instance .*'weight': 0\.3}.*task's {'weight': 0\.05}"
    with pytest.raises(ValueError, match=differ):
        LogLossBC().fit(mixture, other)
    with pytest.raises(ValueError, match="another instance"):  # a subset keeps its identity
        LogLossBC().fit(mixture, other.subset(slice(0, 10)))
    # kwargs that leave defaults out name the same instance: accepted, the same fit
    own = collect_demonstrations(mixture, 50, seed=0)
    short = Demonstrations(MIXTURE, {"horizon": 8}, own.prompts, own.tokens,
                           own.expert_logprobs, own.vocab_size)
    prompts, tokens = mixture.sample_demonstrations(20, np.random.default_rng(1))
    np.testing.assert_array_equal(LogLossBC().fit(mixture, short).token_logprobs(prompts, tokens),
                                  LogLossBC().fit(mixture, own).token_logprobs(prompts, tokens))


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_header_declaring_1e11_elements_raises_value_error(tmp_path: Path,
                                                           version: tuple[int, int]) -> None:
    """A crafted header must not make the loader allocate 800 GB (MemoryError) first."""
    meta, arrays = _good()
    path = tmp_path / "huge.npz"
    _write_npz(path, meta, **arrays)
    header = io.BytesIO()
    write = {(1, 0): np.lib.format.write_array_header_1_0,
             (2, 0): np.lib.format.write_array_header_2_0}[version]
    write(header, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("huge.npy", header.getvalue() + bytes(64))
    with pytest.raises(ValueError, match=r"not a valid demonstrations file: entry 'huge.npy' "
                                         r"declares shape \(100000000000,\)"):
        Demonstrations.load(path)
