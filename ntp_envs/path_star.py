"""PathStar-v0: find the source-to-goal path of a star graph (Bachmann & Nagarajan, ICML 2024).

Token layout (``N = num_nodes``): node labels are ``0..N-1``; the separators are
``EDGE_SEP = N`` (``|``, ends an edge), ``QUERY = N + 1`` (``/``, starts the query) and
``ANSWER = N + 2`` (``=``, ends the prompt). A prompt lists the ``E = degree (path_length - 1)``
directed edges ``u v |`` in a random order, then ``/ s g =`` (source, goal): length
``3 E + 4``. The target is the path from ``s`` to ``g`` (``path_length`` node tokens), in
``forward`` order (``s`` first) or ``reverse`` order (``g`` first).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ntp_envs.base import SequenceEnv
from ntp_envs.sequence_model import DeterministicModel, PromptDistribution
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import BoolArray, FloatArray, IntArray
from ntp_envs.validation import check_int, reject_unknown

ENV_ID = "ntp_envs/PathStar-v0"
TARGET_ORDERS = ("forward", "reverse")
NUM_SEPARATORS = 3
MAX_DEGREE = 64
MAX_PATH_LENGTH = 64
MAX_NUM_NODES = 100_000
DEFAULT_PATH_LENGTH = 4

DEFAULTS: dict[str, Any] = {
    "degree": 2,
    "path_length": None,
    "num_nodes": 20,
    "target_order": "forward",
    "horizon": None,
}


@dataclass(frozen=True)
class StarLayout:
    """Sizes and token ids of one path-star configuration."""

    degree: int
    path_length: int
    num_nodes: int

    @property
    def num_edges(self) -> int:
        return self.degree * (self.path_length - 1)

    @property
    def graph_nodes(self) -> int:
        """Nodes of one graph: the source and ``path_length - 1`` per arm."""
        return 1 + self.num_edges

    @property
    def edge_sep(self) -> int:
        return self.num_nodes

    @property
    def query(self) -> int:
        return self.num_nodes + 1

    @property
    def answer(self) -> int:
        return self.num_nodes + 2

    @property
    def vocab_size(self) -> int:
        return self.num_nodes + NUM_SEPARATORS

    @property
    def prompt_length(self) -> int:
        return 3 * self.num_edges + 4

    def separators(self) -> dict[int, str]:
        return {self.edge_sep: "|", self.query: "/", self.answer: "="}


@dataclass(frozen=True)
class StarGraphs:
    """A batch of graphs: ``edges (B, E, 2)`` in prompt order, ``source``, ``goal`` ``(B,)`` and
    the source-to-goal ``path (B, path_length)``."""

    edges: IntArray
    source: IntArray
    goal: IntArray
    path: IntArray


def generate_graphs(layout: StarLayout, n: int, rng: np.random.Generator) -> StarGraphs:
    """``n`` random star graphs: distinct labels drawn from ``num_nodes``, a uniformly chosen
    goal arm, edges shuffled."""
    d, arm = layout.degree, layout.path_length - 1
    labels = np.argsort(rng.random((n, layout.num_nodes)), axis=1)[:, : layout.graph_nodes]
    source = labels[:, 0]
    arms = labels[:, 1:].reshape(n, d, arm)
    heads = np.concatenate([np.broadcast_to(source[:, None, None], (n, d, 1)), arms[:, :, :-1]],
                           axis=2)
    edges = np.stack([heads, arms], axis=3).reshape(n, layout.num_edges, 2)
    order = np.argsort(rng.random((n, layout.num_edges)), axis=1)
    edges = np.take_along_axis(edges, order[:, :, None], axis=1)
    goal_arm = rng.integers(0, d, size=n)
    path = np.concatenate([source[:, None], arms[np.arange(n), goal_arm]], axis=1)
    return StarGraphs(edges.astype(np.int64), source.astype(np.int64),
                      path[:, -1].astype(np.int64), path.astype(np.int64))


def encode_prompts(layout: StarLayout, graphs: StarGraphs) -> IntArray:
    """Prompts ``(B, 3 E + 4)``: ``u v |`` per edge, then ``/ s g =``."""
    n = len(graphs.source)
    seps = np.full((n, layout.num_edges, 1), layout.edge_sep, dtype=np.int64)
    body = np.concatenate([graphs.edges, seps], axis=2).reshape(n, -1)
    query = np.stack([np.full(n, layout.query), graphs.source, graphs.goal,
                      np.full(n, layout.answer)], axis=1)
    return np.concatenate([body, query], axis=1).astype(np.int64)


def decode_prompts(layout: StarLayout, prompts: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """``(edges (B, E, 2), source (B,), goal (B,))`` of well-formed prompts; ValueError
    naming the first problem otherwise."""
    prompts = np.asarray(prompts, dtype=np.int64)
    if prompts.ndim != 2 or prompts.shape[1] != layout.prompt_length:
        raise ValueError(f"prompts must have shape (B, {layout.prompt_length}), "
                         f"got {prompts.shape}")
    body = prompts[:, : 3 * layout.num_edges].reshape(len(prompts), layout.num_edges, 3)
    tail = prompts[:, 3 * layout.num_edges :]
    edges, source, goal = body[:, :, :2], tail[:, 1], tail[:, 2]
    if (body[:, :, 2] != layout.edge_sep).any() or (tail[:, 0] != layout.query).any() or (
        tail[:, 3] != layout.answer
    ).any():
        raise ValueError("prompts must have separators at the separator positions "
                         "('u v |' per edge, then '/ s g =')")
    nodes = np.concatenate([edges.reshape(len(prompts), -1), source[:, None], goal[:, None]], 1)
    if nodes.size and (nodes.min() < 0 or nodes.max() >= layout.num_nodes):
        raise ValueError(f"prompt node tokens must lie in [0, {layout.num_nodes - 1}]")
    return edges, source, goal


def solve_paths(layout: StarLayout, prompts: IntArray) -> IntArray:
    """The source-to-goal path ``(B, path_length)`` of each prompt, found by walking the
    edges back from the goal; ValueError when a prompt has no such path."""
    edges, source, goal = decode_prompts(layout, prompts)
    n = len(source)
    rows = np.arange(n)
    parent = np.full((n, layout.num_nodes), -1, dtype=np.int64)
    parent[rows[:, None], edges[:, :, 1]] = edges[:, :, 0]
    path = np.empty((n, layout.path_length), dtype=np.int64)
    path[:, -1] = goal
    for j in range(layout.path_length - 1, 0, -1):
        path[:, j - 1] = parent[rows, path[:, j]]
        if (path[:, j - 1] < 0).any():
            raise ValueError(f"a prompt has no path of {layout.path_length} nodes ending at "
                             "its goal: not a path-star graph")
    if (path[:, 0] != source).any():
        raise ValueError(f"a prompt has no source-to-goal path of {layout.path_length} nodes")
    return path


def ordered(path: IntArray, target_order: str) -> IntArray:
    """``path`` in the target order (``reverse``: goal first)."""
    return path[:, ::-1].copy() if target_order == "reverse" else path


def expert_targets(layout: StarLayout, target_order: str, prompts: IntArray) -> IntArray:
    """The expert's sequences ``(B, H)``: each prompt's path in the target order."""
    return ordered(solve_paths(layout, prompts), target_order)


def path_positions(horizon: int, target_order: str) -> IntArray:
    """Index along the source-to-goal path of the token emitted at each step."""
    steps = np.arange(horizon)
    return steps[::-1].copy() if target_order == "reverse" else steps


def format_sequence(layout: StarLayout, prompt: IntArray, tokens: IntArray) -> str:
    """Readable text of one episode: ``"3 7 | 7 12 | ... / 3 12 = 3 7 12"``."""
    names = layout.separators()
    words = [names.get(int(t), str(int(t))) for t in np.concatenate([prompt, tokens])]
    return " ".join(words)


def parse_sequence(layout: StarLayout, text: str) -> tuple[IntArray, IntArray]:
    """Inverse of :func:`format_sequence`: ``(prompt, tokens)``; ValueError if malformed."""
    ids = {name: token for token, name in layout.separators().items()}
    try:
        values = [ids[w] if w in ids else int(w) for w in text.split()]
    except ValueError:
        raise ValueError(f"text must hold node labels and the separators | / =, got {text!r}"
                         ) from None
    if len(values) != layout.prompt_length + layout.path_length:
        raise ValueError(f"text must hold {layout.prompt_length} prompt and "
                         f"{layout.path_length} target tokens, got {len(values)} tokens")
    prompt = np.array(values[: layout.prompt_length], dtype=np.int64)
    tokens = np.array(values[layout.prompt_length :], dtype=np.int64)
    decode_prompts(layout, prompt[None, :])
    if tokens.min() < 0 or tokens.max() >= layout.num_nodes:
        raise ValueError(f"target tokens must be node labels in [0, {layout.num_nodes - 1}]")
    return prompt, tokens


class StarGraphPrompts(PromptDistribution):
    """The prompt law: one fresh random star graph per prompt (:func:`generate_graphs`)."""

    def __init__(self, layout: StarLayout) -> None:
        self.layout = layout
        self.prompt_length = layout.prompt_length

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        return encode_prompts(self.layout, generate_graphs(self.layout, n, rng))


@dataclass(frozen=True)
class PathStarTask(SequenceTask):
    """A path-star task: reward 1.0 on the last step when the whole target is right."""

    def reward(self, prompt: IntArray, prefix: IntArray, action: int) -> float:
        prefix = np.asarray(prefix, dtype=np.int64)
        return float(self.rewards(np.asarray(prompt)[None, :], prefix[None, :],
                                  np.array([len(prefix)]), np.array([action]))[0])

    def rewards(self, prompts: IntArray, tokens: IntArray, positions: IntArray,
                actions: IntArray) -> FloatArray:
        """Batched :meth:`reward` (the form :func:`ntp_envs.vector.step_rewards` uses): row
        ``i`` emits ``actions[i]`` after ``tokens[i, :positions[i]]``."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros(len(positions), dtype=np.float64)
        rows = np.flatnonzero(positions + 1 >= self.horizon)
        if len(rows):
            target = self.expert.deterministic_sequences(np.asarray(prompts)[rows])
            emitted = np.concatenate([np.asarray(tokens, dtype=np.int64)[rows, :self.horizon - 1],
                                      np.asarray(actions, dtype=np.int64)[rows, None]], axis=1)
            out[rows] = (emitted == target).all(axis=1)
        return out


def check_layout(degree: Any, path_length: Any, num_nodes: Any) -> StarLayout:
    """A validated :class:`StarLayout`; ValueError naming the bad parameter."""
    degree = check_int("degree", degree, 2, MAX_DEGREE)
    path_length = check_int("path_length", path_length, 2, MAX_PATH_LENGTH)
    needed = 1 + degree * (path_length - 1)
    num_nodes = check_int("num_nodes", num_nodes, 1, MAX_NUM_NODES)
    if num_nodes < needed:
        raise ValueError(f"num_nodes must be an integer in [{needed}, {MAX_NUM_NODES}]: a graph "
                         f"of degree {degree} and path_length {path_length} has {needed} "
                         f"distinct labels; got {num_nodes}")
    return StarLayout(degree, path_length, num_nodes)


def make_path_star_task(**kwargs: Any) -> PathStarTask:
    """Build the PathStar task (see :class:`PathStarEnv` for the arguments)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("PathStar-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    if p["horizon"] is not None:
        check_int("horizon", p["horizon"], 2, MAX_PATH_LENGTH)
    if p["path_length"] is None:
        p["path_length"] = DEFAULT_PATH_LENGTH if p["horizon"] is None else p["horizon"]
    layout = check_layout(p["degree"], p["path_length"], p["num_nodes"])
    if p["horizon"] is not None and p["horizon"] != layout.path_length:
        raise ValueError(f"horizon must equal path_length {layout.path_length} (or be None), "
                         f"got {p['horizon']}")
    order = p["target_order"]
    if order not in TARGET_ORDERS:
        raise ValueError(f"target_order must be one of {list(TARGET_ORDERS)}, got {order!r}")
    p.update(degree=layout.degree, path_length=layout.path_length, num_nodes=layout.num_nodes,
             horizon=layout.path_length)

    return PathStarTask(
        env_id=ENV_ID,
        params=p,
        horizon=layout.path_length,
        vocab_size=layout.vocab_size,
        prompt_vocab_size=layout.vocab_size,
        prompts=StarGraphPrompts(layout),
        expert=DeterministicModel(functools.partial(expert_targets, layout, order),
                                  layout.vocab_size, layout.path_length, layout.prompt_length),
        learner_class=None,
        reward_doc="1.0 on the last step if the emitted target equals the expert's, else 0.0",
        extras={"layout": layout, "target_order": order,
                "path_positions": path_positions(layout.path_length, order)},
        answer_length=layout.path_length,
    )


class PathStarEnv(SequenceEnv):
    """Emit the path from the source to the goal of a star graph, one node per step.

    ## Description
    A star graph has a source node with ``degree`` arms, each a chain of ``path_length - 1``
    fresh nodes; all ``1 + degree (path_length - 1)`` labels are distinct, drawn uniformly
    from ``num_nodes`` labels; the goal is the end of one arm (chosen uniformly). The
    prompt lists the directed edges (away from the source) in a random order, then the
    source and goal: ``u v | u v | ... / s g =``. The target is the path from source to
    goal, ``path_length`` node tokens, ``s`` first (``target_order="forward"``) or ``g``
    first (``"reverse"``). The expert emits the true path: it is deterministic, so the
    squared Hellinger distance of a learner ``Q`` is exactly
    ``2 - 2 E_x sqrt(Q(path(x) | x))`` (``evaluation.divergence``, method ``deterministic``,
    averaging over sampled graphs).

    Forward order is Bachmann & Nagarajan's (ICML 2024) trap for teacher forcing: once the
    first node after the source is right, each later node is the successor of the previous
    one in the edge list (a "Clever Hans" lookup), which leaves the first choice, which needs
    planning back from the goal, at chance (``1 / degree``). In reverse order every token is
    the unique parent of the previous one. ``task.extras["path_positions"][t]`` is the index
    along the source-to-goal path of the token emitted at step ``t``.

    Tokens: node labels ``0..N-1``, then ``|`` = ``N``, ``/`` = ``N + 1``, ``=`` = ``N + 2``
    (``N = num_nodes``); ``format_sequence``/``parse_sequence`` give the text form.

    ## Action Space
    ``Discrete(num_nodes + 3)``: the whole vocabulary (the expert only emits node labels).

    ## Observation Space
    ``MultiDiscrete`` of length ``L + 1 + H`` (``L = 3 degree (path_length - 1) + 4``,
    ``H = path_length``): ``[prompt, h, a_1..a_h, V, ..., V]`` with ``V = num_nodes + 3``.

    ## Rewards
    0.0 on every step but the last; on the last, 1.0 if the emitted tokens equal the
    target, else 0.0. ``info["correct"]`` says whether the step's token equals the target's
    token at that step; the final ``info["per_position_correct"]`` holds all ``H`` of them.

    ## Episode End
    Terminated after exactly ``path_length`` tokens; never truncated.

    ## Arguments
    ``degree`` (2, in [2, 64]), ``path_length`` (None: ``horizon`` if given, else 4; in
    [2, 64]), ``num_nodes`` (20, at least ``1 + degree (path_length - 1)``),
    ``target_order`` (``"forward"`` or ``"reverse"``), ``horizon`` (None; a given value must
    equal ``path_length``, which it sets when ``path_length`` is None, so sweeps over
    ``--horizons`` vary the path length).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        degree: int = 2,
        path_length: int | None = None,
        num_nodes: int = 20,
        target_order: str = "forward",
        horizon: int | None = None,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("PathStar-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_path_star_task(degree=degree, path_length=path_length, num_nodes=num_nodes,
                                   target_order=target_order, horizon=horizon)
        super().__init__(task, render_mode=render_mode)
        self._target = np.zeros(task.horizon, dtype=np.int64)
        self._correct: BoolArray = np.zeros(task.horizon, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[IntArray, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        assert self._prompt is not None
        self._target = self.task.expert.deterministic_sequences(self._prompt[None, :])[0]
        self._correct[:] = False
        return obs, info

    def step(self, action: Any) -> tuple[IntArray, float, bool, bool, dict[str, Any]]:
        h = self._h
        obs, reward, terminated, truncated, info = super().step(action)
        self._correct[h] = bool(self._prefix[h] == self._target[h])
        info["correct"] = bool(self._correct[h])
        if terminated:
            info["per_position_correct"] = self._correct.copy()
        return obs, reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._prompt is None:
            return super().render()
        layout: StarLayout = self.task.extras["layout"]
        return format_sequence(layout, self._prompt, self._prefix[: self._h])
