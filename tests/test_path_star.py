"""PathStar-v0: the graph generator, the env, the exact Hellinger formula, the GPT agents and
the Clever-Hans measurements."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import ntp_envs  # noqa: F401 - registers the envs
from agents import load_policy, make_agent
from agents.gpt import MODEL_TYPE, GPTConfig, gpt_agent
from agents.lm_inputs import DEVICE_ENV, gpt_device, target_inputs
from evaluation.divergences import divergence
from evaluation.metrics.pathstar import pathstar_metrics
from experts import ExpertPolicy, collect_demonstrations
from ntp_envs import make_task
from ntp_envs.path_star import (
    ENV_ID,
    StarLayout,
    decode_prompts,
    encode_prompts,
    format_sequence,
    generate_graphs,
    parse_sequence,
    solve_paths,
)
from ntp_envs.sequence_model import FinitePrompts, SequenceModel
from ntp_envs.type_aliases import FloatArray, IntArray


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202 - the CI machine is small and shared: no thread contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LAYOUTS = [StarLayout(2, 4, 20), StarLayout(3, 5, 13), StarLayout(5, 2, 6), StarLayout(2, 2, 100)]
TINY = GPTConfig(n_layer=1, n_head=2, d_model=16, steps=5, batch_size=32, warmup=2)


def _all_paths(edges: IntArray, start: int, goal: int) -> list[list[int]]:
    """Every directed path from ``start`` to ``goal`` (depth-first)."""
    children: dict[int, list[int]] = {}
    for u, v in edges:
        children.setdefault(int(u), []).append(int(v))
    found, stack = [], [[start]]
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            found.append(path)
        stack.extend(path + [c] for c in children.get(path[-1], []) if c not in path)
    return found


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"d{lay.degree}-p{lay.path_length}")
def test_generated_graphs_are_star_graphs(layout: StarLayout) -> None:
    for seed in range(25):
        graphs = generate_graphs(layout, 8, np.random.default_rng(seed))
        for edges, source, goal, path in zip(graphs.edges, graphs.source, graphs.goal,
                                             graphs.path, strict=True):
            nodes = np.unique(edges)
            assert len(nodes) == layout.graph_nodes  # distinct labels, all used
            assert nodes.min() >= 0 and nodes.max() < layout.num_nodes
            assert len(edges) == layout.num_edges == len({tuple(e) for e in edges.tolist()})
            out_degree = {int(n): int((edges[:, 0] == n).sum()) for n in nodes}
            in_degree = {int(n): int((edges[:, 1] == n).sum()) for n in nodes}
            assert out_degree[int(source)] == layout.degree and in_degree[int(source)] == 0
            assert all(in_degree[n] == 1 for n in in_degree if n != source)
            assert all(out_degree[n] <= 1 for n in out_degree if n != source)
            leaves = [n for n in out_degree if out_degree[n] == 0]
            assert len(leaves) == layout.degree and goal in leaves
            paths = _all_paths(edges, int(source), int(goal))
            assert paths == [path.tolist()]  # exactly one source-goal path, the target
            assert len(path) == layout.path_length


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"d{lay.degree}-p{lay.path_length}")
def test_prompt_format_and_round_trips(layout: StarLayout) -> None:
    rng = np.random.default_rng(1)
    graphs = generate_graphs(layout, 50, rng)
    prompts = encode_prompts(layout, graphs)
    assert prompts.shape == (50, 3 * layout.num_edges + 4) == (50, layout.prompt_length)
    assert (prompts[:, 2 : 3 * layout.num_edges : 3] == layout.edge_sep).all()
    assert (prompts[:, -4] == layout.query).all() and (prompts[:, -1] == layout.answer).all()
    edges, source, goal = decode_prompts(layout, prompts)
    np.testing.assert_array_equal(edges, graphs.edges)
    np.testing.assert_array_equal(source, graphs.source)
    np.testing.assert_array_equal(goal, graphs.goal)
    np.testing.assert_array_equal(solve_paths(layout, prompts), graphs.path)
    for prompt, path in zip(prompts[:5], graphs.path[:5], strict=True):
        text = format_sequence(layout, prompt, path)
        assert text.count("|") == layout.num_edges and " / " in text and " = " in text
        back_prompt, back_path = parse_sequence(layout, text)
        np.testing.assert_array_equal(back_prompt, prompt)
        np.testing.assert_array_equal(back_path, path)
    # the edge order is shuffled: the edge into the goal sits anywhere in the list
    many = generate_graphs(layout, 2000, rng)
    into_goal = (many.edges[:, :, 1] == many.goal[:, None]).argmax(axis=1)
    assert len(np.unique(into_goal)) == layout.num_edges


def test_goal_arm_and_labels_vary() -> None:
    layout = StarLayout(3, 3, 30)
    graphs = generate_graphs(layout, 3000, np.random.default_rng(0))
    arm_of_goal = [np.flatnonzero(e[:, 1] == p[1]) for e, p in zip(graphs.edges, graphs.path,
                                                                      strict=True)]
    assert all(len(a) == 1 for a in arm_of_goal)
    counts = np.bincount(graphs.source, minlength=30)
    assert counts.min() > 0  # every label can be the source
    first = np.array([int(p[1]) for p in graphs.path])
    assert len(np.unique(first)) == 30 or len(np.unique(first)) > 25


def test_parse_and_solve_reject_malformed_input() -> None:
    layout = StarLayout(2, 3, 10)
    prompt = encode_prompts(layout, generate_graphs(layout, 1, np.random.default_rng(0)))[0]
    text = format_sequence(layout, prompt, solve_paths(layout, prompt[None])[0])
    with pytest.raises(ValueError, match="tokens"):
        parse_sequence(layout, text + " 3")
    with pytest.raises(ValueError, match="node labels"):
        parse_sequence(layout, text.replace("/", "?"))
    broken = prompt.copy()
    broken[2] = 0  # an edge separator replaced by a node
    with pytest.raises(ValueError, match="separators"):
        solve_paths(layout, broken[None])
    cut = prompt.copy()
    goal_pos = layout.prompt_length - 2
    cut[goal_pos] = cut[0]  # the goal replaced by a node with another depth
    with pytest.raises(ValueError, match="path"):
        solve_paths(layout, cut[None])


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"degree": 1}, "degree"),
    ({"degree": 0}, "degree"),
    ({"path_length": 1}, "path_length"),
    ({"num_nodes": 6}, "num_nodes"),  # degree 2, path_length 4 needs 7 labels
    ({"degree": 3, "path_length": 5, "num_nodes": 12}, "num_nodes"),
    ({"degree": 2.5}, "degree"),
    ({"target_order": "sideways"}, "target_order"),
    ({"path_length": 4, "horizon": 5}, "horizon"),
    ({"horizon": 1}, "horizon"),
    ({"colour": 1}, "colour"),
])
def test_bad_arguments_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gym.make(ENV_ID, **kwargs)


def test_defaults_and_horizon_sets_path_length() -> None:
    task = make_task(ENV_ID)
    assert (task.params["degree"], task.params["path_length"], task.params["num_nodes"]) == (
        2, 4, 20)
    assert task.horizon == 4 and task.vocab_size == 23 and task.prompts.prompt_length == 22
    assert make_task(ENV_ID, horizon=6).params["path_length"] == 6
    assert make_task(ENV_ID, path_length=5, horizon=5).horizon == 5


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_episode_rewards_and_correctness_info(order: str) -> None:
    env = gym.make(ENV_ID, target_order=order)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        target = env.unwrapped.task.expert.deterministic_sequences(info["prompt"][None])[0]
        layout = env.unwrapped.task.extras["layout"]
        path = solve_paths(layout, info["prompt"][None])[0]
        np.testing.assert_array_equal(target, path[::-1] if order == "reverse" else path)
        rewards = []
        for token in target:
            _, reward, terminated, _, step_info = env.step(int(token))
            rewards.append(reward)
            assert step_info["correct"] is True
        assert rewards == [0.0, 0.0, 0.0, 1.0] and terminated
        assert step_info["per_position_correct"].all()
        env.reset(seed=seed)
        wrong = target.copy()
        wrong[1] = (wrong[1] + 1) % layout.num_nodes
        for token in wrong:
            _, reward, terminated, _, step_info = env.step(int(token))
        assert reward == 0.0 and terminated
        assert step_info["per_position_correct"].tolist() == [True, False, True, True]


def test_batched_rewards_pay_the_whole_path_only() -> None:
    task = make_task(ENV_ID)
    rng = np.random.default_rng(3)
    prompts, tokens = task.sample_demonstrations(300, rng)
    paths = solve_paths(task.extras["layout"], prompts)
    tokens[::2, 1] = (tokens[::2, 1] + 1) % 20  # half the rows leave the path at the decision
    positions = rng.integers(0, task.horizon, size=300)
    actions = np.where(rng.random(300) < 0.8, paths[:, -1], 0)
    rewards = task.rewards(prompts, tokens, positions, actions)
    right = ((positions == task.horizon - 1) & (tokens[:, :-1] == paths[:, :-1]).all(axis=1)
             & (actions == paths[:, -1]))
    assert right.sum() > 20 and (~right).sum() > 20
    np.testing.assert_array_equal(rewards, right.astype(float))


def test_teacherless_inputs_hide_the_target() -> None:
    prefixes = np.array([[3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(target_inputs(prefixes, "teacherless", 23), np.full((2, 3), 23))
    np.testing.assert_array_equal(target_inputs(prefixes, "tf", 23), prefixes)
    from agents.hf_lm import HFSequenceModel, build_model

    task = make_task(ENV_ID)
    net = build_model(task, MODEL_TYPE, {"num_hidden_layers": 2, "hidden_size": 32})
    model = HFSequenceModel(net, task, "teacherless", torch.device("cpu"))
    rng = np.random.default_rng(0)
    x = task.prompts.sample(16, rng)
    a = rng.integers(0, task.vocab_size, size=(16, 3))
    b = rng.integers(0, task.vocab_size, size=(16, 3))
    # the conditionals ignore the prefix: the law is the product of one pass's marginals
    np.testing.assert_allclose(model.next_token_logprobs(x, a), model.next_token_logprobs(x, b))
    one_pass = model.target_logprobs(x, np.zeros((16, 3), dtype=np.int64))
    for h in range(4):
        np.testing.assert_allclose(model.next_token_logprobs(x, a[:, :h]), one_pass[:, h],
                                   atol=1e-6)
    np.testing.assert_array_equal(model.greedy(x), one_pass.argmax(axis=2))
    tokens = np.concatenate([a, b[:, :1]], axis=1)
    expected = np.take_along_axis(one_pass, tokens[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    np.testing.assert_allclose(model.sequence_logprob(x, tokens), expected, atol=1e-6)
    # teacher forcing does read the prefix
    tf = HFSequenceModel(net, task, "tf", torch.device("cpu"))
    assert np.abs(tf.next_token_logprobs(x, a) - tf.next_token_logprobs(x, b)).max() > 1e-4


class _RandomModel(SequenceModel):
    """A prefix-dependent random policy over the vocabulary (a fixed hash of the context)."""

    def __init__(self, vocab_size: int, horizon: int) -> None:
        self.vocab_size, self.horizon = vocab_size, horizon

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        context = np.concatenate([prompts, prefixes], axis=1)
        seed = (context * (np.arange(context.shape[1]) + 7)).sum(axis=1)
        logits = np.sin(seed[:, None] * 0.37 + np.arange(self.vocab_size)[None, :] * 1.3) * 3
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def test_exact_hellinger_matches_enumeration_on_a_tiny_case() -> None:
    task = make_task(ENV_ID, degree=2, path_length=2, num_nodes=3)  # V = 6, H = 2
    prompts = np.unique(task.prompts.sample(200, np.random.default_rng(0)), axis=0)
    weights = np.random.default_rng(1).random(len(prompts))
    law = FinitePrompts(prompts, np.log(weights / weights.sum()))
    learner = _RandomModel(task.vocab_size, task.horizon)
    exact = divergence(task.expert, learner, law, method="deterministic")
    brute = divergence(task.expert, learner, law, method="enumerate")
    q = np.exp(learner.sequence_logprob(prompts, task.expert.deterministic_sequences(prompts)))
    formula = 2 - 2 * np.sum(np.exp(law.log_probs) * np.sqrt(q))
    assert exact.method == "deterministic_exact" and exact.hellinger2_stderr == 0
    assert exact.hellinger2 == pytest.approx(brute.hellinger2, abs=1e-12)
    assert exact.hellinger2 == pytest.approx(formula, abs=1e-12)
    assert exact.kl == pytest.approx(brute.kl, abs=1e-10)
    assert exact.tv == pytest.approx(brute.tv, abs=1e-12)


class CleverHans(SequenceModel):
    """The shortcut a teacher-forced model learns: the source, a uniformly random child of the
    source, then always the child of the previous token (read off the edge list)."""

    def __init__(self, task) -> None:  # noqa: ANN001
        self.layout = task.extras["layout"]
        self.vocab_size, self.horizon = task.vocab_size, task.horizon

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        edges, source, _ = decode_prompts(self.layout, prompts)
        h = prefixes.shape[1]
        out = np.full((len(prompts), self.vocab_size), -np.inf)
        rows = np.arange(len(prompts))
        if h == 0:
            out[rows, source] = 0.0
            return out
        parent = source if h == 1 else prefixes[:, -1]
        hits = edges[:, :, 0] == parent[:, None]
        counts = hits.sum(axis=1)
        for b in rows:
            children = edges[b, hits[b], 1]
            if counts[b]:
                out[b, children] = -math.log(counts[b])
            else:
                out[b, :] = -math.log(self.vocab_size)
        return out


def test_metrics_and_exact_hellinger_of_the_clever_hans_shortcut() -> None:
    task = make_task(ENV_ID, degree=3)
    shortcut = CleverHans(task)
    m = pathstar_metrics(task, shortcut, n_prompts=3000, rng=0)
    assert m.decision_accuracy == pytest.approx(1 / 3, abs=0.03)
    assert m.exact_path_accuracy == pytest.approx(1 / 3, abs=0.03)
    assert m.later_tf_accuracy == 1.0 and m.later_given_correct_prev == 1.0
    assert m.edge_following == 1.0 and m.tf_path_accuracy[0] == 1.0
    # P(path | x) = 1/3 on every graph: D_H^2 = 2 - 2 / sqrt(3) exactly (no spread over x)
    result = divergence(task.expert, shortcut, task.prompts, n_samples=500)
    assert result.method == "deterministic_mc"  # random graphs: prompts are sampled
    assert result.hellinger2 == pytest.approx(2 - 2 / math.sqrt(3), abs=1e-12)
    assert result.kl == pytest.approx(math.log(3), abs=1e-12)
    expert = pathstar_metrics(task, task.expert, n_prompts=200, rng=0)
    assert expert.exact_path_accuracy == 1.0 and expert.decision_accuracy == 1.0
    assert expert.path_accuracy == [1.0] * 4


def test_metrics_report_path_order_for_reverse_targets() -> None:
    task = make_task(ENV_ID, target_order="reverse")

    class FirstWrong(SequenceModel):  # the expert, except the path's source is never right
        vocab_size, horizon = task.vocab_size, task.horizon

        def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
            logp = task.expert.next_token_logprobs(prompts, prefixes)
            if prefixes.shape[1] == task.horizon - 1:  # reverse order: the source comes last
                return np.roll(logp, 1, axis=1)
            return logp

    m = pathstar_metrics(task, FirstWrong(), n_prompts=100, rng=0)
    assert m.path_accuracy == [0.0, 1.0, 1.0, 1.0]
    assert m.tf_path_accuracy == [0.0, 1.0, 1.0, 1.0]
    assert m.decision_accuracy == 1.0 and m.exact_path_accuracy == 0.0


def test_metrics_reject_other_tasks() -> None:
    with pytest.raises(ValueError, match="PathStar"):
        pathstar_metrics(make_task("ntp_envs/ARLinear-v0"), _RandomModel(2, 8))


@pytest.mark.parametrize("agent", ["gpt-tf", "gpt-reverse", "gpt-teacherless"])
def test_agent_smoke_fit_act_save_load(agent: str, tmp_path) -> None:
    order = "reverse" if agent == "gpt-reverse" else "forward"
    task = make_task(ENV_ID, path_length=3, num_nodes=8, target_order=order)
    demos = collect_demonstrations(task, 64, 0)
    registered = make_agent(agent)
    assert registered.name == agent and registered.steps > 1000  # the registered budget
    assert (registered.model_type, registered.mode) == (MODEL_TYPE, agent.removeprefix("gpt-"))
    learner = gpt_agent(registered.mode, TINY, agent)
    policy = learner.fit(task, demos, np.random.default_rng(0))
    assert policy.info["mode"] == agent.removeprefix("gpt-")
    x = task.prompts.sample(20, np.random.default_rng(1))
    for h in range(task.horizon):
        logp = policy.next_token_logprobs(x, np.zeros((20, h), dtype=np.int64))
        np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-6)
    tokens = policy.sample(x, np.random.default_rng(2))
    assert tokens.shape == (20, task.horizon)
    manual = sum(policy.next_token_logprobs(x, tokens[:, :h])[np.arange(20), tokens[:, h]]
                 for h in range(task.horizon))
    np.testing.assert_allclose(policy.sequence_logprob(x, tokens), manual, atol=1e-6)
    result = divergence(task.expert, policy, task.prompts, n_samples=400, rng=3)
    # against 2 - 2 E_x sqrt(Q(tau*(x) | x)) on other prompts: agree within the error bars
    x_other = task.prompts.sample(400, np.random.default_rng(4))
    root_q = np.exp(0.5 * policy.sequence_logprob(
        x_other, task.expert.deterministic_sequences(x_other)))
    other, other_se = 2 - 2 * root_q.mean(), 2 * root_q.std(ddof=1) / math.sqrt(400)
    assert result.method == "deterministic_mc" and result.hellinger2_stderr > 0
    assert abs(result.hellinger2 - other) < 4 * math.hypot(result.hellinger2_stderr, other_se)
    env = gym.make(ENV_ID, path_length=3, num_nodes=8, target_order=order)
    actor = ExpertPolicy(task, seed=0, model=policy)
    obs, _ = env.reset(seed=0)
    terminated = False
    while not terminated:
        action, _ = actor.predict(obs, deterministic=True)
        obs, reward, terminated, _, _ = env.step(action)
    path = tmp_path / f"{agent}.npz"
    policy.save(path)
    loaded = load_policy(path)
    np.testing.assert_allclose(loaded.sequence_logprob(x, tokens),
                               policy.sequence_logprob(x, tokens), atol=1e-6)
    m = pathstar_metrics(task, policy, n_prompts=50, rng=0)
    # against greedy decoding one token at a time on the same 50 prompts
    x = task.prompts.sample(50, np.random.default_rng(0))
    free = np.zeros((50, 0), dtype=np.int64)
    for _ in range(task.horizon):
        free = np.c_[free, policy.next_token_logprobs(x, free).argmax(axis=1)]
    right = free == task.expert.deterministic_sequences(x)
    assert m.exact_path_accuracy == right.all(axis=1).mean()
    order = np.argsort(task.extras["path_positions"])
    assert m.path_accuracy == pytest.approx(right.mean(axis=0)[order], abs=1e-12)


def test_sb3_evaluation_pays_one_per_right_path() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.sb3_policy import as_sb3_policy
    from ntp_envs.vector import make_sb3_vec_env

    kwargs = {"path_length": 3, "num_nodes": 8}
    task = make_task(ENV_ID, **kwargs)
    venv = VecMonitor(make_sb3_vec_env(ENV_ID, 4, seed=0, **kwargs))
    mean, _ = evaluate_policy(as_sb3_policy(task.expert, task, seed=0), venv, n_eval_episodes=8)
    assert mean == 1.0  # the expert's path, every episode
    # the shortcut picks the right arm with probability 1 / degree exactly
    n, right = 200, 1 / task.extras["layout"].degree
    mean, _ = evaluate_policy(as_sb3_policy(CleverHans(task), task, seed=0), venv,
                              n_eval_episodes=n)
    assert abs(mean - right) < 4 * math.sqrt(right * (1 - right) / n)


def test_teacherless_dummy_is_no_prompt_token_on_other_tasks() -> None:
    from ntp_envs.hf import text_view

    task = make_task("ntp_envs/ARLinear-v0", horizon=4)  # prompt vocabulary 4 > V = 2
    demos = collect_demonstrations(task, 64, 0)
    policy = gpt_agent("teacherless", TINY).fit(task, demos, np.random.default_rng(0))
    view = text_view(task)
    read = policy.model.inputs(demos.prompts, demos.tokens[:, :3])
    dummy = view.special_ids["pad_token"]
    assert (read[:, -3:] == dummy).all()  # the targets' inputs: the dummy word only
    assert dummy not in set(view.prompt_ids(np.arange(4)[None]).ravel()) | {0, 1}
    logp = policy.next_token_logprobs(demos.prompts, demos.tokens[:, :2])
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="prompt tokens must lie"):
        policy.next_token_logprobs(demos.prompts + 4, demos.tokens[:, :2])


def test_reverse_agent_needs_reverse_targets() -> None:
    task = make_task(ENV_ID, path_length=3, num_nodes=8)
    demos = collect_demonstrations(task, 8, 0)
    with pytest.raises(ValueError, match="target_order"):
        gpt_agent("reverse", TINY, "gpt-reverse").fit(task, demos)


def test_agent_rejects_population_fits_and_bad_config() -> None:
    with pytest.raises(ValueError, match="demonstrations"):
        gpt_agent("tf", TINY).fit(make_task(ENV_ID), None)
    with pytest.raises(ValueError, match="mode"):
        gpt_agent("sideways", TINY)
    with pytest.raises(ValueError, match="d_model"):
        GPTConfig(n_head=3, d_model=16)
    with pytest.raises(ValueError, match="steps"):
        GPTConfig(steps=0)


def test_device_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert gpt_device() == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "toaster")
    with pytest.raises(ValueError, match=DEVICE_ENV):
        gpt_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv(DEVICE_ENV, "cuda")
        with pytest.raises(ValueError, match=DEVICE_ENV):
            gpt_device()


def test_training_is_reproducible_and_learns_the_trivial_tokens() -> None:
    task = make_task(ENV_ID, path_length=3, num_nodes=8)
    demos = collect_demonstrations(task, 512, 0)
    config = GPTConfig(n_layer=2, n_head=2, d_model=32, steps=200, batch_size=64, lr=3e-3,
                       warmup=10)
    a = gpt_agent("tf", config).fit(task, demos, np.random.default_rng(5))
    b = gpt_agent("tf", config).fit(task, demos, np.random.default_rng(5))
    x = task.prompts.sample(200, np.random.default_rng(9))
    np.testing.assert_array_equal(a.greedy(x), b.greedy(x))
    m = pathstar_metrics(task, a, n_prompts=500, rng=0)
    assert m.tf_path_accuracy[0] > 0.95  # the source: copied from the prompt


@pytest.mark.slow
def test_teacher_forcing_fails_where_reverse_targets_succeed(tmp_path) -> None:
    """The split of Bachmann & Nagarajan at the defaults (degree 2, path length 4, 20 labels),
    with the registered agents and budgets, through the sweep (two single-threaded worker
    processes: 8.5 minutes on this 2-core machine)."""
    from evaluation.bench.backends import LocalBackend
    from evaluation.bench.store import ResultStore
    from evaluation.bench.sweep import SweepConfig, run_sweep
    from evaluation.experiments.pathstar import PATHSTAR, PATHSTAR_TRAIN

    configs = [
        SweepConfig(ENV_ID, PATHSTAR, ("gpt-tf",), (4,), seeds=1, n_train=PATHSTAR_TRAIN,
                    eval_samples=4000),
        SweepConfig(ENV_ID, {**PATHSTAR, "target_order": "reverse"}, ("gpt-reverse",), (4,),
                    seeds=1, n_train=PATHSTAR_TRAIN, eval_samples=4000),
    ]
    with ResultStore(tmp_path / "results.sqlite") as store, LocalBackend(2) as backend:
        run_sweep(configs, store, backend=backend, progress=False)
        frame = store.results().set_index("agent")
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    tf = json.loads(frame.loc["gpt-tf", "task_metrics"])
    rev = json.loads(frame.loc["gpt-reverse", "task_metrics"])
    # teacher forcing: the Clever-Hans lookup is learned, the decision stays at chance
    assert tf["later_tf_accuracy"] >= 0.95
    assert abs(tf["decision_accuracy"] - 0.5) <= 0.07
    assert abs(tf["exact_path_accuracy"] - 0.5) <= 0.07
    # reverse targets: every token is the parent of the previous one, and the path is found
    assert rev["exact_path_accuracy"] >= 0.95
    # the exact D_H^2 = 2 - 2 E sqrt(Q(path | x)) tells the same story
    assert frame.loc["gpt-reverse", "hellinger2"] < 0.2 < frame.loc["gpt-tf", "hellinger2"]
