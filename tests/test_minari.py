"""Demonstrations exported as a Minari dataset load back losslessly (optional extra)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

minari = pytest.importorskip("minari")

from minari.data_collector.episode_buffer import EpisodeBuffer  # noqa: E402

from experts import collect_demonstrations  # noqa: E402
from experts.minari_io import from_minari, to_minari  # noqa: E402
from ntp_envs import make_task  # noqa: E402


@pytest.fixture(autouse=True)
def datasets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("ntp_envs/ARLinear-v0", {"horizon": 6, "context_probs": [0.1, 0.2, 0.3, 0.4]}),
    ("ntp_envs/FiniteClassBarrier-v0", {"horizon": 5, "event_prob": 0.3}),
])
def test_round_trip_is_lossless(env_id: str, kwargs: dict) -> None:
    demos = collect_demonstrations(make_task(env_id, **kwargs), 40, seed=0)
    dataset = to_minari(demos, "ntp-gym/test/expert-v0")
    assert dataset.total_episodes == 40 and dataset.total_steps == 40 * demos.horizon
    for loaded in (from_minari("ntp-gym/test/expert-v0"), from_minari(dataset)):
        assert loaded.env_id == demos.env_id and loaded.env_kwargs == demos.env_kwargs
        assert loaded.vocab_size == demos.vocab_size
        for name in ("prompts", "tokens", "expert_logprobs"):
            original, back = getattr(demos, name), getattr(loaded, name)
            assert back.dtype == original.dtype
            np.testing.assert_array_equal(back, original)
    episode = next(dataset.iterate_episodes())
    np.testing.assert_array_equal(episode.observations, demos.observations()[0])
    assert episode.terminations[-1] and not episode.truncations.any()
    env = minari.load_dataset("ntp-gym/test/expert-v0").recover_environment()
    assert env.unwrapped.task.horizon == demos.horizon


def test_existing_id_and_foreign_datasets_raise() -> None:
    demos = collect_demonstrations(make_task("ntp_envs/ARLinear-v0", horizon=3), 5, seed=0)
    to_minari(demos, "ntp-gym/test/expert-v0")
    with pytest.raises(ValueError, match="already exists"):
        to_minari(demos, "ntp-gym/test/expert-v0")
    # a dataset whose observations do not encode its actions is not a demonstration set
    obs = demos.observations()[0].copy()
    obs[1:, 0] = 3  # the prompt changes mid-episode
    env_kwargs = demos.env_kwargs
    minari.create_dataset_from_buffers(
        "ntp-gym/test/foreign-v0", [EpisodeBuffer(
            id=0, observations=obs, actions=demos.tokens[0], rewards=list(demos.expert_logprobs[0]),
            terminations=[False, False, True], truncations=[False] * 3, infos={})],
        env=gym.make(demos.env_id, **env_kwargs), description="foreign", algorithm_name="hand",
        author="test", author_email="none", eval_env=gym.spec(demos.env_id))
    with pytest.raises(ValueError, match="observations"):
        from_minari("ntp-gym/test/foreign-v0")
