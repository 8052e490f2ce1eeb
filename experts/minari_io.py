"""Demonstrations as Minari datasets and back, losslessly (optional extra ``[minari]``).

A demonstration set becomes one Minari dataset: one episode per sequence with the env's
observations ``(H + 1, D)``, the tokens as actions, the expert's token log-probabilities as
rewards, ``terminations`` true at the last step, and the env's spec (id and keyword
arguments), so ``dataset.recover_environment()`` rebuilds the env. Minari keeps datasets
under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``), addressed by an id of the
form ``[namespace/][env_name/]dataset_name-vN``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from experts.demonstrations import Demonstrations
from ntp_envs import make_task
from ntp_envs.vector import prefix_observations

if TYPE_CHECKING:
    from minari import MinariDataset

__all__ = ["from_minari", "to_minari"]


def _minari() -> Any:
    try:
        import minari
    except ImportError:
        raise ImportError("Minari export needs the optional extra: "
                          "pip install 'ntp-gym[minari]'") from None
    return minari


def to_minari(
    demonstrations: Demonstrations, dataset_id: str, *, description: str | None = None,
    author: str | None = None, data_format: str = "hdf5",
) -> MinariDataset:
    """Write ``demonstrations`` as the new local Minari dataset ``dataset_id``."""
    minari = _minari()
    from minari.data_collector.episode_buffer import EpisodeBuffer

    task = demonstrations.task()
    horizon = demonstrations.horizon
    observations = prefix_observations(task, demonstrations.prompts, demonstrations.tokens,
                                       horizon + 1)
    done = np.arange(horizon) == horizon - 1
    buffers = [
        EpisodeBuffer(id=i, observations=observations[i], actions=demonstrations.tokens[i],
                      rewards=list(demonstrations.expert_logprobs[i]),
                      terminations=list(done), truncations=[False] * horizon, infos={})
        for i in range(demonstrations.num_sequences)
    ]
    env = gym.make(demonstrations.env_id, **demonstrations.env_kwargs)
    if description is None:
        description = (f"{demonstrations.num_sequences} expert sequences of "
                       f"{demonstrations.env_id} (ntp-gym); rewards are the expert's token "
                       "log-probabilities")
    with warnings.catch_warnings():  # minari's advice to set optional metadata (author...)
        warnings.filterwarnings("ignore", message=".* is set to None", category=UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env, eval_env=env.spec, algorithm_name="expert",
            author=author, description=description, data_format=data_format,
        )


def from_minari(dataset: MinariDataset | str) -> Demonstrations:
    """The demonstrations stored in a Minari dataset (or the local dataset with that id)
    written by :func:`to_minari`; ValueError if it does not hold such sequences."""
    minari = _minari()
    if isinstance(dataset, str):
        dataset = minari.load_dataset(dataset)
    spec = dataset.spec.env_spec
    if spec is None or not isinstance(dataset.action_space, gym.spaces.Discrete):
        raise ValueError("dataset must record its env spec and have a Discrete action space")
    kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k != "render_mode"}
    episodes = sorted(dataset.iterate_episodes(), key=lambda episode: episode.id)
    if not episodes:
        raise ValueError("dataset holds no episodes")
    lengths = {len(episode.actions) for episode in episodes}
    if len(lengths) != 1 or not all(bool(episode.terminations[-1]) for episode in episodes):
        raise ValueError("every episode must be one whole sequence (same length, terminated)")
    tokens = np.stack([np.asarray(episode.actions) for episode in episodes])
    observations = np.stack([np.asarray(episode.observations) for episode in episodes])
    logp = np.stack([np.asarray(episode.rewards, dtype=np.float64) for episode in episodes])
    if not np.issubdtype(tokens.dtype, np.integer) or observations.ndim != 3:
        raise ValueError("dataset actions must be integer tokens and observations arrays")
    length = make_task(spec.id, **kwargs).prompts.prompt_length
    demonstrations = Demonstrations(env_id=spec.id, env_kwargs=kwargs,
                                    prompts=observations[:, 0, :length], tokens=tokens,
                                    expert_logprobs=logp, vocab_size=int(dataset.action_space.n))
    expected = prefix_observations(demonstrations.task(), demonstrations.prompts, tokens,
                                   tokens.shape[1] + 1)
    if not np.array_equal(expected, observations):
        raise ValueError("dataset observations do not encode its prompts and tokens")
    return demonstrations
