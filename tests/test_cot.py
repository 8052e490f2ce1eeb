"""CoT tasks (ParityCoT, MultiplicationCoT), full-context learners and deterministic evaluation."""

from __future__ import annotations

import itertools
import json
import sqlite3

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import agents.linear_ar as linear_ar_module
from agents import load_policy, make_agent
from agents.context_models import ContextOneHot, position_rows, training_sequences
from agents.linear_ar import LinearAR
from agents.logistic import fit_logistic
from evaluation.bench.store import ResultStore
from evaluation.cli import main
from evaluation.divergences import divergence
from evaluation.metrics.accuracy import answer_accuracy, greedy_decode
from experts import collect_demonstrations
from ntp_envs import make_task
from ntp_envs.multiplication_cot import (
    PAIR0,
    format_sequence,
    held_out,
    multiplication_sequences,
    operands,
    parse_sequence,
    read_answer,
)
from ntp_envs.parity_cot import format_sequence as parity_format
from ntp_envs.parity_cot import parse_sequence as parity_parse
from ntp_envs.sequence_model import DeterministicModel, FinitePrompts, UniformPrompts

PARITY = "ntp_envs/ParityCoT-v0"
MULT = "ntp_envs/MultiplicationCoT-v0"


# ------------------------------------------------------------------ generators are right


@pytest.mark.parametrize(("cot", "stride"), [("none", 1), *itertools.product(
    ["count", "xor"], [1, 3, 7])])
def test_parity_generator_matches_brute_force(cot: str, stride: int) -> None:
    task = make_task(PARITY, num_bits=7, subset_size=4, cot=cot, cot_stride=stride, task_seed=3)
    subset = task.extras["subset"]
    prompts = task.prompts.sample(300, np.random.default_rng(0))
    tokens = task.expert.deterministic_sequences(prompts)
    assert tokens.shape == (300, task.horizon)
    ends = [min(j * stride, 7) for j in range(1, -(-7 // stride) + 1)]
    for x, seq in zip(prompts, tokens, strict=True):
        counts = [sum(int(x[i]) for i in subset if i < t) for t in ends]
        expected = {"none": [], "count": counts, "xor": [c % 2 for c in counts]}[cot]
        assert seq.tolist() == [*expected, sum(int(x[i]) for i in subset) % 2]
        back_prompt, back_tokens = parity_parse(parity_format(x, seq))
        np.testing.assert_array_equal(back_prompt, x)
        np.testing.assert_array_equal(back_tokens, seq)
    assert task.horizon == (1 if cot == "none" else len(ends) + 1)
    assert task.vocab_size == (5 if cot == "count" else 2)


@pytest.mark.parametrize("stride", [3, 7])
def test_parity_refuses_a_stride_without_cot(stride: int) -> None:
    """A stride only spaces CoT tokens: with ``cot='none'`` any stride but 1 is refused."""
    with pytest.raises(ValueError) as caught:
        make_task(PARITY, num_bits=7, subset_size=4, cot="none", cot_stride=stride)
    assert str(caught.value) == f"cot_stride must be 1 when cot='none', got {stride}"


def test_parity_prompt_law_lists_every_bit_string() -> None:
    task = make_task(PARITY, num_bits=5, subset_size=2)
    assert isinstance(task.prompts, UniformPrompts) and task.prompts.num_contexts == 32
    assert len({tuple(row) for row in task.prompts.contexts}) == 32
    sampled = task.prompts.sample(1000, np.random.default_rng(1))
    index = task.prompts.index_of(sampled)
    np.testing.assert_array_equal(task.prompts.contexts[index], sampled)
    assert np.bincount(index, minlength=32).min() > 10  # uniform


@pytest.mark.parametrize("num_digits", [1, 2, 3])
@pytest.mark.parametrize("pair_tokens", [False, True])
def test_multiplication_long_cot_is_right(num_digits: int, pair_tokens: bool) -> None:
    task = make_task(MULT, num_digits=num_digits, pair_tokens=pair_tokens)
    prompts = np.concatenate([task.prompts.sample(100, np.random.default_rng(0)),
                              task.test_prompts.sample(100, np.random.default_rng(1))])
    tokens = task.expert.deterministic_sequences(prompts)
    assert tokens.shape == (200, task.horizon)
    a_values, b_values = operands(prompts, num_digits)
    pairs = list(itertools.product(range(num_digits), range(num_digits)))
    for x, seq, a, b in zip(prompts, tokens, a_values, b_values, strict=True):
        text = format_sequence(x, seq, num_digits)
        back_prompt, back_tokens = parse_sequence(text)  # the text form round-trips
        np.testing.assert_array_equal(back_prompt, x)
        np.testing.assert_array_equal(back_tokens, seq)
        head, expansion, products, partials, answer = text.split(" = ")
        assert head == f"{a} x {b}"
        # both operands expanded into digit x place terms, least significant first
        terms = [f"{(v // 10**i) % 10} x {' '.join('1' + '0' * i)}" for v in (a, b)
                 for i in range(num_digits)]
        left, right = terms[:num_digits], terms[num_digits:]
        assert expansion == f"( {' + '.join(left)} ) x ( {' + '.join(right)} )"
        # the digit-pair products with their places, then the zero-padded partial products
        sep = "x" if pair_tokens else " x "
        assert products.split(" + ") == [
            f"{(a // 10**i) % 10}{sep}{(b // 10**j) % 10} x {' '.join('1' + '0' * i)} x "
            f"{' '.join('1' + '0' * j)}" for i, j in pairs]
        values = [int(p.replace(" ", "")) for p in partials.split(" + ")]
        widths = [len(p.replace(" ", "")) for p in partials.split(" + ")]
        assert values == [((a // 10**i) % 10) * ((b // 10**j) % 10) * 10 ** (i + j)
                          for i, j in pairs]
        assert widths == [i + j + 2 for i, j in pairs]
        assert sum(values) == a * b == int(answer.replace(" ", ""))
        assert len(answer.split()) == 2 * num_digits
    np.testing.assert_array_equal(read_answer(tokens, num_digits), a_values * b_values)
    assert tokens.max() < task.vocab_size and (tokens >= PAIR0).any() == pair_tokens


def test_multiplication_without_cot_is_the_answer() -> None:
    task = make_task(MULT, num_digits=2, cot="none")
    prompts = task.prompts.sample(500, np.random.default_rng(0))
    tokens = task.expert.deterministic_sequences(prompts)
    a, b = operands(prompts, 2)
    assert task.horizon == 4 and task.vocab_size == 10 and task.answer_length == 4
    np.testing.assert_array_equal(read_answer(tokens, 2), a * b)
    assert multiplication_sequences(prompts, 2, "long").shape[1] == 78
    lsd = make_task(MULT, num_digits=2, answer_order="lsd")
    reversed_tokens = lsd.expert.deterministic_sequences(prompts)
    np.testing.assert_array_equal(reversed_tokens[:, -4:], tokens[:, ::-1])
    np.testing.assert_array_equal(read_answer(reversed_tokens, 2, "lsd"), a * b)


@pytest.mark.parametrize("num_digits", [1, 2, 3])
def test_train_and_test_pairs_are_disjoint(num_digits: int) -> None:
    def pairs(prompts: np.ndarray) -> np.ndarray:
        a, b = operands(prompts, num_digits)
        return a * 10**num_digits + b

    task = make_task(MULT, num_digits=num_digits, split_seed=4)
    train, test = pairs(task.prompts.contexts), pairs(task.test_prompts.contexts)
    assert not np.intersect1d(train, test).size
    every = np.arange(10 ** (num_digits - 1), 10**num_digits)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])),
                                  (every[:, None] * 10**num_digits + every[None, :]).ravel())
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.35  # test_fraction 0.25
    other = make_task(MULT, num_digits=num_digits, split_seed=5)
    assert not np.array_equal(np.sort(pairs(other.test_prompts.contexts)), np.sort(test))


def test_sampled_splits_stay_disjoint_beyond_listing() -> None:
    task = make_task(MULT, num_digits=4, cot="none")
    rng = np.random.default_rng(0)
    train, test = task.prompts.sample(2000, rng), task.test_prompts.sample(2000, rng)
    assert not held_out(*operands(train, 4), 0.25, 0).any()
    assert held_out(*operands(test, 4), 0.25, 0).all()
    assert (train[:, 0] > 0).all() and (test[:, 4] > 0).all()  # 4-digit operands


@pytest.mark.parametrize(("env_id", "kwargs", "name"), [
    (PARITY, {"num_bits": 0}, "num_bits"),
    (PARITY, {"num_bits": 4, "subset_size": 5}, "subset_size"),
    (PARITY, {"subset_size": 0}, "subset_size"),
    (PARITY, {"cot": "scratchpad"}, "cot"),
    (PARITY, {"cot": "none", "cot_stride": 2}, "cot_stride"),
    (PARITY, {"cot_stride": 0}, "cot_stride"),
    (PARITY, {"horizon": 3}, "horizon"),
    (PARITY, {"foo": 1}, "foo"),
    (MULT, {"num_digits": 0}, "num_digits"),
    (MULT, {"num_digits": 5}, "num_digits"),
    (MULT, {"cot": "short"}, "cot"),
    (MULT, {"test_fraction": 1.0}, "test_fraction"),
    (MULT, {"cot": "none", "pair_tokens": True}, "pair_tokens"),
    (MULT, {"answer_order": "reversed"}, "answer_order"),
    (MULT, {"horizon": 4}, "horizon"),
])
def test_bad_arguments_name_the_parameter(env_id: str, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gym.make(env_id, **kwargs)


def test_env_reward_is_zero_for_expert_tokens_only() -> None:
    env = gym.make(PARITY, num_bits=6, subset_size=3, cot="count")
    obs, info = env.reset(seed=0)
    expert = env.unwrapped.task.expert.deterministic_sequences(info["prompt"][None])[0]
    _, reward, _, _, _ = env.step(int(expert[0]))
    assert reward == 0.0
    _, reward, _, _, _ = env.step(int(expert[1] + 1) % env.action_space.n)
    assert reward == -100.0


# ------------------------------------------------- deterministic experts: exact evaluation


def _fitted(task, n: int = 300, seed: int = 0):
    return LinearAR(l2=1e-2).fit(task, collect_demonstrations(task, n, seed))


def test_deterministic_method_matches_enumeration_and_monte_carlo() -> None:
    task = make_task(PARITY, num_bits=4, subset_size=2, cot="count", cot_stride=2)
    learner = _fitted(task, 40)
    exact = divergence(task.expert, learner, task.prompts)
    assert exact.method == "deterministic_exact" and exact.hellinger2_stderr == 0.0
    enumerated = divergence(task.expert, learner, task.prompts, method="enumerate")
    for key in ("hellinger2", "kl", "tv"):
        assert getattr(exact, key) == pytest.approx(getattr(enumerated, key), rel=1e-9)
    assert 0.0 < exact.hellinger2 < 2.0
    # the closed form over the support: 2 - 2 E_x sqrt(Q(tau*(x) | x))
    x = task.prompts.contexts
    log_q = learner.sequence_logprob(x, task.expert.deterministic_sequences(x))
    assert exact.hellinger2 == pytest.approx(2 - 2 * np.mean(np.exp(log_q / 2)), rel=1e-12)
    assert exact.kl == pytest.approx(-np.mean(log_q), rel=1e-12)
    sampled = divergence(task.expert, learner, task.prompts, method="monte_carlo",
                         n_samples=4000, rng=1)
    assert abs(sampled.hellinger2 - exact.hellinger2) < 4 * sampled.hellinger2_stderr + 1e-12


def test_deterministic_method_samples_prompts_beyond_the_listing_limit(monkeypatch) -> None:
    import evaluation.methods.deterministic as det

    task = make_task(PARITY, num_bits=6, subset_size=3, cot="count")
    learner = _fitted(task, 100)
    exact = divergence(task.expert, learner, task.prompts)
    monkeypatch.setattr(det, "MAX_EXACT_TOKENS", 10)
    sampled = divergence(task.expert, learner, task.prompts, n_samples=3000, rng=0)
    assert sampled.method == "deterministic_mc" and sampled.hellinger2_stderr > 0
    assert abs(sampled.hellinger2 - exact.hellinger2) < 4 * sampled.hellinger2_stderr
    assert abs(sampled.kl - exact.kl) < 4 * sampled.kl_stderr


def test_expert_scores_perfectly_against_itself() -> None:
    task = make_task(MULT, num_digits=1)
    result = divergence(task.expert, task.expert, task.prompts)
    assert (result.hellinger2, result.kl, result.tv) == (0.0, 0.0, 0.0)
    acc = answer_accuracy(task, task.expert)
    assert acc.accuracy == 1.0 and acc.split == "test" and acc.stderr == 0.0


# ------------------------------------------------- held-out accuracy leaves out training


def _memoriser(task, seen: np.ndarray) -> DeterministicModel:
    """A planted learner: the expert's sequence on the prompts in ``seen``, the expert's with
    the parity answer flipped on every other prompt."""
    memorised = {tuple(row) for row in np.asarray(seen).tolist()}

    def sequences(prompts: np.ndarray) -> np.ndarray:
        tokens = task.expert.deterministic_sequences(prompts).copy()
        unseen = np.array([tuple(row) not in memorised for row in prompts.tolist()])
        tokens[unseen, -1] = 1 - tokens[unseen, -1]
        return tokens

    return DeterministicModel(sequences, task.vocab_size, task.horizon, task.prompts.prompt_length)


def test_held_out_accuracy_leaves_out_the_demonstration_prompts(monkeypatch) -> None:
    import evaluation.methods.deterministic as det

    task = make_task(PARITY, num_bits=8, subset_size=4, cot="count")
    demos = collect_demonstrations(task, 100, 0)
    distinct = len({tuple(row) for row in demos.prompts.tolist()})  # about 80 of 256
    model = _memoriser(task, demos.prompts)
    held = answer_accuracy(task, model, seen=demos.prompts)
    assert (held.accuracy, held.stderr, held.split) == (0.0, 0.0, "held-out")
    assert held.num_prompts == 256 - distinct
    every = answer_accuracy(task, model)  # no training prompts given: over all prompts
    assert every.split == "all" and every.num_prompts == 256
    assert every.accuracy == pytest.approx(distinct / 256, abs=1e-12)
    monkeypatch.setattr(det, "MAX_EXACT_TOKENS", 10)  # sampled prompts: the same split
    sampled = answer_accuracy(task, model, seen=demos.prompts, n_samples=2000, rng=0)
    assert (sampled.accuracy, sampled.split) == (0.0, "held-out")
    assert 0.6 * 2000 < sampled.num_prompts < 2000  # the seen ones dropped from the sample
    mixed = answer_accuracy(task, model, n_samples=2000, rng=0)
    assert mixed.split == "all" and abs(mixed.accuracy - distinct / 256) < 4 * mixed.stderr


def test_accuracy_over_all_prompts_when_every_prompt_was_seen() -> None:
    task = make_task(PARITY, num_bits=3, subset_size=2, cot="count")
    demos = collect_demonstrations(task, 200, 0)  # 8 prompts: every one seen
    estimate = answer_accuracy(task, _memoriser(task, demos.prompts), seen=demos.prompts)
    assert (estimate.accuracy, estimate.split, estimate.num_prompts) == (1.0, "all", 8)


def test_accuracy_rejects_seen_prompts_of_the_wrong_shape() -> None:
    task = make_task(PARITY, num_bits=4, subset_size=2, cot="count")
    with pytest.raises(ValueError) as caught:
        answer_accuracy(task, task.expert, seen=np.zeros((3, 5), dtype=np.int64))
    assert str(caught.value) == ("seen must be an integer array of shape (n, 4), got shape "
                                 "(3, 5) and dtype int64")
    with pytest.raises(ValueError, match="got shape \\(3, 4\\) and dtype float64"):
        answer_accuracy(task, task.expert, seen=np.zeros((3, 4)))


def test_sweep_scores_accuracy_on_the_prompts_its_demonstrations_missed(monkeypatch) -> None:
    """``run_job`` hands the demonstration prompts to the accuracy, a population fit none."""
    import evaluation.bench.sweep as sweep_module
    from evaluation.bench.sweep import SweepConfig, compute_oracle, run_job, sweep_jobs

    drawn, given = [], []

    def recording_demos(*args, **kwargs):
        drawn.append(collect_demonstrations(*args, **kwargs))
        return drawn[-1]

    def recording_metrics(task, model, n_samples, rng, seen=None):
        given.append(seen)
        return {}

    monkeypatch.setattr(sweep_module, "collect_demonstrations", recording_demos)
    monkeypatch.setattr(sweep_module, "task_metrics", recording_metrics)
    kwargs = {"num_bits": 6, "subset_size": 3}
    for n_train in (50, 0):
        (job,) = sweep_jobs(SweepConfig(PARITY, kwargs, ("linear-ar",), (7,), seeds=1,
                                        n_train=n_train))
        assert run_job(job, compute_oracle(job))["status"] == "ok"
    assert len(drawn) == 1 and len(given) == 2
    np.testing.assert_array_equal(given[0], drawn[0].prompts)
    assert given[1] is None


def test_r6_note_names_the_prompts_each_accuracy_was_measured_on() -> None:
    from evaluation.experiments import cot

    def rows(parity_split: str) -> pd.DataFrame:
        settings = [(PARITY, {**cot.COT_PARITY, "cot": "count", "cot_stride": 1}, "linear-ar",
                     0.997, parity_split),
                    (PARITY, {**cot.COT_PARITY, "cot": "none", "cot_stride": 1}, "linear-ar",
                     0.5, parity_split),
                    (MULT, {"num_digits": 2, "cot": "long", "answer_order": "lsd"}, "mlp-ar",
                     0.97, "test")]
        return pd.DataFrame([{
            "env_id": env, "env_kwargs": json.dumps(kwargs, sort_keys=True), "agent": agent,
            "horizon": 1, "seed": 0, "n_train": 4000, "status": "ok", "answer_accuracy": acc,
            "answer_accuracy_stderr": 0.0, "answer_split": split}
            for env, kwargs, agent, acc, split in settings])

    held = cot.R6.evaluate(rows("held-out"), "cot")
    assert held.verdict == "holds"
    assert held.note == ("parity answer accuracy on prompts not in the demonstrations (exact); "
                         "multiplication on held-out test pairs")
    assert "all prompts (training ones included)" in cot.R6.evaluate(rows("all"), "cot").note


# ------------------------------------------------------------------- the learners


def test_linear_ar_reuses_the_suite_solver(monkeypatch) -> None:
    assert linear_ar_module.fit_logistic is fit_logistic
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return fit_logistic(*args, **kwargs)

    monkeypatch.setattr(linear_ar_module, "fit_logistic", counting)
    task = make_task(PARITY, num_bits=5, subset_size=2, cot="xor")
    LinearAR().fit(task, collect_demonstrations(task, 50, 0))
    assert len(calls) == task.horizon  # one exact multinomial regression per position


def test_linear_ar_observed_inputs_give_the_full_regression() -> None:
    """Unobserved inputs get weight 0: fitting on the observed ones only is the same fit."""
    task = make_task(PARITY, num_bits=4, subset_size=2, cot="count")
    policy = LinearAR(l2=1e-3).fit(task, None)  # population: every prompt, weight mu
    encoding = ContextOneHot.of(task)
    prompts, tokens, weights = training_sequences(task, None)
    for h in range(task.horizon):
        active = encoding.active(prompts, tokens[:, :h])
        rows, counts = position_rows(active, tokens[:, h], weights, task.vocab_size)
        full = fit_logistic(rows, counts, encoding.num_inputs(h), l2=1e-3)
        weights_full = full.theta.reshape(encoding.num_inputs(h), task.vocab_size)
        np.testing.assert_allclose(weights_full[policy.inputs[h].observed], policy.weights[h],
                                   atol=1e-8)
        unseen = np.setdiff1d(np.arange(encoding.num_inputs(h)), policy.inputs[h].observed)
        assert np.abs(weights_full[unseen]).max(initial=0.0) < 1e-12


def test_quick_parity_reproduction_count_learns_none_does_not() -> None:
    accuracy = {}
    for cot in ("none", "count", "xor"):
        task = make_task(PARITY, num_bits=10, subset_size=5, cot=cot)
        policy = LinearAR().fit(task, collect_demonstrations(task, 1000, 0))
        accuracy[cot] = answer_accuracy(task, policy).accuracy  # exact over 1024 prompts
    assert accuracy["count"] >= 0.97
    assert abs(accuracy["none"] - 0.5) <= 0.1
    assert abs(accuracy["xor"] - 0.5) <= 0.1


def test_policies_save_and_load_without_pickle(tmp_path) -> None:
    task = make_task(PARITY, num_bits=6, subset_size=3, cot="count", cot_stride=2)
    demos = collect_demonstrations(task, 200, 0)
    x = task.prompts.contexts
    tau = task.expert.deterministic_sequences(x)
    for name in ("linear-ar", "mlp-ar"):
        agent = make_agent(name)
        if name == "mlp-ar":
            agent.epochs = 2
        policy = agent.fit(task, demos, np.random.default_rng(0))
        path = policy.save(tmp_path / f"{name}.npz")
        with np.load(path, allow_pickle=False) as data:
            assert "metadata" in data.files
        loaded = load_policy(path)
        assert type(loaded) is type(policy)
        np.testing.assert_allclose(loaded.token_logprobs(x, tau), policy.token_logprobs(x, tau),
                                   atol=1e-6)
        np.testing.assert_array_equal(greedy_decode(loaded, x), greedy_decode(policy, x))


def test_mlp_ar_learns_a_small_count_cot() -> None:
    task = make_task(PARITY, num_bits=6, subset_size=3, cot="count")
    policy = make_agent("mlp-ar")
    policy.epochs, policy.batch_size = 15, 64  # 450 training sequences: small batches
    fitted = policy.fit(task, collect_demonstrations(task, 500, 0), np.random.default_rng(0))
    assert answer_accuracy(task, fitted).accuracy >= 0.95
    assert fitted.info["train_log_loss_per_token"] < 0.05


def test_mlp_ar_stops_on_its_validation_split() -> None:
    """Early stopping on a split of the demonstrations: 30 of 300 held back, the best
    epoch's weights kept, training stopped ``patience`` epochs after it."""
    task = make_task(PARITY, num_bits=6, subset_size=3, cot="count")
    agent = make_agent("mlp-ar")
    agent.epochs, agent.patience, agent.learning_rate = 200, 2, 3e-2
    fitted = agent.fit(task, collect_demonstrations(task, 300, 0), np.random.default_rng(0))
    info = fitted.info
    assert info["validation_rows"] == 30
    assert info["epochs_run"] == info["best_epoch"] + 2 < 200
    agent.validation = 0.5
    with pytest.raises(ValueError, match="validation must lie in"):
        agent.fit(task, None)


# ------------------------------------------------------------- sweep, store, report


def test_sweep_stores_answer_accuracy_and_plots_it(tmp_path) -> None:
    out = tmp_path / "cot"
    argv = ["sweep", "--env", PARITY, "--env-kwargs", '{"num_bits": 8, "subset_size": 4}',
            "--agents", "linear-ar", "--horizons", "9", "--seeds", "2", "--n-train", "300",
            "--quiet", "--out", str(out)]
    assert main(argv) == 0
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "ok").all() and len(frame) == 2
    assert frame["answer_accuracy"].between(0.9, 1.0).all()  # on the ~80 unseen of 256 prompts
    assert (frame["answer_accuracy_stderr"] == 0).all()
    assert (frame["answer_split"] == "held-out").all()
    assert (frame["eval_method"] == "deterministic_exact").all()
    assert (out / "answer_accuracy.png").stat().st_size > 10_000


def test_store_without_answer_columns_gains_them(tmp_path) -> None:
    path = tmp_path / "results.sqlite"
    with ResultStore(path):
        pass
    with sqlite3.connect(path) as conn:  # an older store: drop the newer columns
        for column in ("answer_accuracy", "answer_accuracy_stderr", "answer_split"):
            conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
    with ResultStore(path) as store:
        assert "answer_accuracy" in store.results().columns


def test_uniform_prompts_reject_bad_input() -> None:
    prompts = UniformPrompts(np.array([[0, 1], [1, 1]]))
    assert isinstance(prompts, FinitePrompts)
    with pytest.raises(ValueError, match="support"):
        prompts.index_of(np.array([[1, 0]]))
    with pytest.raises(ValueError, match="distinct"):
        UniformPrompts(np.array([[0, 1], [0, 1]]))


# --------------------------------------------------------- the reproductions


@pytest.mark.slow
def test_parity_16_of_8_count_cot_learns_none_and_xor_stay_at_chance() -> None:
    """The ``cot`` preset's parity settings (4,000 demonstrations; about 2 minutes)."""
    from evaluation.experiments.cot import COT_PARITY, COT_PARITY_TRAIN

    accuracy = {}
    for cot in ("none", "count", "xor"):
        task = make_task(PARITY, **COT_PARITY, cot=cot)
        policy = LinearAR().fit(task, collect_demonstrations(task, COT_PARITY_TRAIN, 0))
        accuracy[cot] = answer_accuracy(task, policy).accuracy  # exact over 2^16 prompts
    assert accuracy["count"] >= 0.99
    assert abs(accuracy["none"] - 0.5) <= 0.05
    assert abs(accuracy["xor"] - 0.5) <= 0.05


@pytest.mark.slow
def test_mlp_ar_multiplies_2_by_2_digits_on_held_out_pairs() -> None:
    """Long CoT, answer least significant digit first, all training pairs (about 1.5 minutes);
    without CoT the same learner stays far below."""
    rng = np.random.default_rng(0)
    long = make_task(MULT, num_digits=2, cot="long", answer_order="lsd")
    fitted = make_agent("mlp-ar").fit(long, None, rng)
    assert answer_accuracy(long, fitted).accuracy >= 0.9  # held-out pairs
    direct = make_task(MULT, num_digits=2, cot="none")
    fitted = make_agent("mlp-ar").fit(direct, None, rng)
    assert answer_accuracy(direct, fitted).accuracy <= 0.5
