"""HuggingFace bridge: text view and tokenizer, HF datasets both ways, TRL reward functions,
``hf:<model_type>`` agents and scoring of transformers models (needs the ``hf`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from experts import Demonstrations, collect_demonstrations  # noqa: E402
from ntp_envs import make_task  # noqa: E402
from ntp_envs.hf import SPECIAL_TOKENS, prompt_dataset, reward_functions, text_view, tokenizer  # noqa: E402,E501
from ntp_envs.multiplication_cot import token_text  # noqa: E402
from ntp_envs.path_star import format_sequence  # noqa: E402
from ntp_envs.task import REWARD_FLOOR  # noqa: E402

PATH_STAR = "ntp_envs/PathStar-v0"
AR_LINEAR = "ntp_envs/ARLinear-v0"
TASKS = [(PATH_STAR, {}), (AR_LINEAR, {"horizon": 8}), ("ntp_envs/ParityCoT-v0", {}),
         ("ntp_envs/MultiplicationCoT-v0", {})]


@pytest.mark.parametrize(("env_id", "kwargs"), TASKS)
def test_tokenizer_reads_prompt_plus_completion(env_id, kwargs, tmp_path):
    task = make_task(env_id, **kwargs)
    tok = tokenizer(task)
    view = text_view(task)
    prompts, tokens = task.sample_demonstrations(5, np.random.default_rng(0))
    eos = tok.convert_tokens_to_ids(SPECIAL_TOKENS["eos_token"])
    for p, t in zip(prompts, tokens, strict=True):
        text = view.prompt_text(p) + view.completion_text(t) + tok.eos_token
        ids = tok(text)["input_ids"]
        assert ids == view.prompt_ids(p[None])[0].tolist() + t.tolist() + [eos]
        assert tok.unk_token_id not in ids
    # special tokens after the task's words, all distinct
    specials = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id]
    assert len(set(specials)) == 4 and min(specials) >= task.vocab_size
    assert len(tok) == view.vocab_size
    tok.save_pretrained(tmp_path)
    again = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = view.prompt_text(prompts[0]) + view.completion_text(tokens[0])
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.pad_token == SPECIAL_TOKENS["pad_token"]


def test_text_is_the_tasks_own_text():
    task = make_task(PATH_STAR)
    view = text_view(task)
    prompts, tokens = task.sample_demonstrations(4, np.random.default_rng(1))
    for p, t in zip(prompts, tokens, strict=True):  # path_star's own formatter
        assert view.prompt_text(p) + view.completion_text(t) == format_sequence(
            task.extras["layout"], p, t)
    mult = make_task("ntp_envs/MultiplicationCoT-v0")
    _, tokens = mult.sample_demonstrations(2, np.random.default_rng(1))
    assert text_view(mult).completion_text(tokens[0]).split() == [token_text(int(a))
                                                                  for a in tokens[0]]
    ar = text_view(make_task(AR_LINEAR, horizon=8, num_contexts=3))
    assert ar.prompt_text(np.array([2])) == "p2" and ar.completion_text(np.array([1, 0])) == \
        " t1 t0"


def test_prompt_dataset():
    task = make_task(PATH_STAR)
    ds = prompt_dataset(task, 6, seed=3)
    assert ds.column_names == ["prompt", "prompt_ids"] and len(ds) == 6
    tok = tokenizer(task)
    for row in ds:
        assert tok(row["prompt"])["input_ids"] == row["prompt_ids"]
        assert len(row["prompt_ids"]) == task.prompts.prompt_length
    assert prompt_dataset(task, 6, seed=3)["prompt"] == ds["prompt"]
    assert prompt_dataset(task, 6, seed=4)["prompt"] != ds["prompt"]
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        prompt_dataset(task, 0, seed=3)


@pytest.mark.parametrize(("env_id", "kwargs"), TASKS[:3])
def test_hf_dataset_round_trip(env_id, kwargs, tmp_path):
    import datasets

    task = make_task(env_id, **kwargs)
    demos = collect_demonstrations(task, 300, 0)
    ds = demos.to_hf_dataset()
    assert {"prompt", "completion", "prompt_ids", "completion_ids",
            "expert_logprobs"} <= set(ds.column_names)
    ds.save_to_disk(str(tmp_path / "ds"))
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    back = Demonstrations.from_hf_dataset(loaded, make_task(env_id, **kwargs))
    assert np.array_equal(back.prompts, demos.prompts)
    assert np.array_equal(back.tokens, demos.tokens)
    assert np.array_equal(back.expert_logprobs, demos.expert_logprobs)  # bit-exact floats
    assert back.env_kwargs == demos.env_kwargs and back.vocab_size == demos.vocab_size
    # TRL reads prompt + completion: the ids it gets are the stored ids
    tok = tokenizer(task)
    row = ds[0]
    assert tok(row["prompt"] + row["completion"])["input_ids"] == row["prompt_ids"] + \
        row["completion_ids"]


def test_hf_dataset_validated_on_load():
    task = make_task(AR_LINEAR, horizon=8)
    ds = collect_demonstrations(task, 20, 0).to_hf_dataset()
    with pytest.raises(ValueError, match=r"missing columns \['completion'\]"):
        Demonstrations.from_hf_dataset(ds.remove_columns("completion"), task)

    def edit(column, value):
        return ds.map(lambda row, i: {column: value(row)} if i == 3 else {},
                      with_indices=True)

    with pytest.raises(ValueError, match="row 3: prompt/completion text"):
        Demonstrations.from_hf_dataset(edit("completion", lambda r: " t0" * 8), task)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 1\]"):
        Demonstrations.from_hf_dataset(edit("completion_ids", lambda r: [5] * 8), task)
    with pytest.raises(ValueError, match="expert_logprobs must be log-probabilities"):
        Demonstrations.from_hf_dataset(edit("expert_logprobs", lambda r: [0.5] * 8), task)
    with pytest.raises(ValueError, match="expert_logprobs must hold n >= 1 lists of 8"):
        Demonstrations.from_hf_dataset(edit("expert_logprobs", lambda r: [-1.0] * 7), task)
    with pytest.raises(ValueError, match="prompt_ids must be word ids of prompt tokens"):
        Demonstrations.from_hf_dataset(edit("prompt_ids", lambda r: [0]), task)
    with pytest.raises(ValueError, match="holds demonstrations of 'ntp_envs/ARLinear-v0'"):
        Demonstrations.from_hf_dataset(ds, make_task(PATH_STAR))
    with pytest.raises(ValueError, match="another instance than the task"):
        Demonstrations.from_hf_dataset(ds, make_task(AR_LINEAR, horizon=8, task_seed=5))
    with pytest.raises(ValueError, match="ds must be a datasets.Dataset"):
        Demonstrations.from_hf_dataset({"prompt": []}, task)


def test_reward_functions_path_star():
    task = make_task(PATH_STAR)
    view = text_view(task)
    prompts, tokens = task.sample_demonstrations(8, np.random.default_rng(2))
    task_reward, expert_loglik = reward_functions(task)
    assert (task_reward.__name__, expert_loglik.__name__) == ("task_reward", "expert_loglik")
    texts = [view.prompt_text(p) for p in prompts]
    own = [view.completion_text(t) for t in tokens]
    corrupted_tokens = tokens.copy()
    corrupted_tokens[:, 1] = (tokens[:, 1] + 1) % task.extras["layout"].num_nodes
    corrupted = [view.completion_text(t) for t in corrupted_tokens]
    assert task_reward(texts, own) == [1.0] * 8
    assert task_reward(texts, corrupted) == [0.0] * 8
    # TRL decodes without special tokens and may keep an <eos>; too short is malformed
    assert task_reward(texts[:2], [own[0].strip() + "<eos>", own[1][:-2]]) == [1.0, 0.0]
    assert expert_loglik(texts, own) == [0.0] * 8
    assert all(r <= REWARD_FLOOR for r in expert_loglik(texts, corrupted))
    assert task_reward(texts[:1], ["hello"]) == [0.0]


def test_reward_functions_cot_and_ar():
    task = make_task("ntp_envs/ParityCoT-v0")
    view = text_view(task)
    prompts, tokens = task.sample_demonstrations(6, np.random.default_rng(3))
    bits = prompts[:, task.extras["subset"]].sum(axis=1) % 2  # parity, computed directly
    assert np.array_equal(tokens[:, -1], bits)
    wrong = tokens.copy()
    wrong[:, -1] = 1 - wrong[:, -1]
    texts = [view.prompt_text(p) for p in prompts]
    task_reward, _ = reward_functions(task)
    assert task_reward(texts, [view.completion_text(t) for t in tokens]) == [1.0] * 6
    assert task_reward(texts, [view.completion_text(t) for t in wrong]) == [0.0] * 6
    ar = make_task(AR_LINEAR, horizon=8)
    view = text_view(ar)
    prompts, tokens = ar.sample_demonstrations(5, np.random.default_rng(4))
    _, loglik = reward_functions(ar)
    got = loglik([view.prompt_text(p) for p in prompts], [view.completion_text(t)
                                                           for t in tokens])
    expected = [sum(float(ar.reward(p, t[:h], int(t[h]))) for h in range(8))
                for p, t in zip(prompts, tokens, strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# ---------------------------------------------------------------- hf:<model_type> agents

def _enumerated_hellinger2(task, log_q) -> float:
    """``2 - 2 BC`` of the expert against ``log_q(prompts, seqs)`` by listing every
    sequence of every context (independent of the evaluator)."""
    import itertools

    seqs = np.array(list(itertools.product(range(task.vocab_size), repeat=task.horizon)))
    law = task.prompts
    bc = 0.0
    for context, logmu in zip(law.contexts, law.log_probs, strict=True):
        prompts = np.repeat(context[None], len(seqs), axis=0)
        log_p = task.expert.sequence_logprob(prompts, seqs)
        bc += np.exp(logmu) * np.exp(0.5 * (log_p + log_q(prompts, seqs))).sum()
    return float(2 - 2 * bc)


@pytest.fixture(scope="module")
def ar_fit():
    from agents import make_agent

    task = make_task(AR_LINEAR, horizon=4)
    demos = collect_demonstrations(task, 1000, 0)
    agent = make_agent("hf:gpt2?n_layer=1&n_embd=32&steps=150&warmup=20")
    return task, agent.fit(task, demos, np.random.default_rng(0))


def test_hf_agent_names():
    from agents import make_agent
    from agents.hf_lm import HFAgent

    agent = make_agent("hf:gpt2?n_layer=1&n_embd=32&mode=teacherless&steps=7")
    assert isinstance(agent, HFAgent)
    assert (agent.model_type, agent.sizes, agent.mode, agent.steps) == (
        "gpt2", {"n_layer": 1, "n_embd": 32}, "teacherless", 7)
    assert agent.name == "hf:gpt2?n_layer=1&n_embd=32&mode=teacherless&steps=7"
    with pytest.raises(ValueError,
                       match=r"--agents: hf:gpt2\?n_layers=1: \['n_layers'\] are no config"):
        make_agent("hf:gpt2?n_layers=1", "--agents")
    with pytest.raises(ValueError,
                       match="--agents: hf:nosuchlm: model_type: 'nosuchlm' is no causal LM"):
        make_agent("hf:nosuchlm", "--agents")
    with pytest.raises(ValueError, match="mode must be one of"):
        make_agent("hf:gpt2?mode=sideways")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        make_agent("hf:gpt2?steps=0")
    with pytest.raises(ValueError, match="parameters, more than"):
        from agents.hf_lm import build_model

        build_model(make_task(AR_LINEAR, horizon=4), "gpt2", {"n_embd": 4096, "n_layer": 24})
    with pytest.raises(ValueError, match="transformers refuses the config"):
        from agents.hf_lm import build_model

        build_model(make_task(AR_LINEAR, horizon=4), "gpt2", {"n_embd": 30, "n_head": 4})


def test_hf_agent_learns_and_scores_exactly(ar_fit):
    from evaluation.score import score

    task, policy = ar_fit
    uniform = _enumerated_hellinger2(
        task, lambda p, s: np.full(len(s), -task.horizon * np.log(task.vocab_size)))
    ours = _enumerated_hellinger2(task, policy.sequence_logprob)
    row = score(task, policy)
    assert row["status"] == "ok" and row["eval_method"] == "enumerate"
    assert row["hellinger2"] == pytest.approx(ours, abs=1e-9)
    assert ours < 0.3 * uniform, (ours, uniform)
    # the bare transformers model scores the same (PreTrainedModel adapter)
    bare = score(task, policy.net)
    assert bare["hellinger2"] == pytest.approx(ours, abs=1e-9)
    # next-token rows are distributions over the task's actions
    logp = policy.next_token_logprobs(task.prompts.contexts, np.zeros((4, 2), dtype=np.int64))
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-9)


def test_exact_score_of_an_hf_model_past_the_small_enumeration_limit():
    """4^7 = 16,384 sequences per context (over the 4,096 auto limit for models with tables):
    ``score`` enumerates a network's law (C * V^(H-1) = 16,384 prefixes <= 100,000 samples)
    and matches the brute-force listing of every full sequence; ``extension_logprobs`` (one
    teacher-forced pass per prefix) equals the extended sequences' log-likelihoods."""
    from agents.hf_lm import HFSequenceModel, build_model
    from evaluation.score import score

    task = make_task(AR_LINEAR, vocab_size=4, horizon=7)
    model = build_model(task, "gpt2", {"n_layer": 1, "n_embd": 16}, seed=3)
    reader = HFSequenceModel(model, task)
    row = score(task, model)
    assert row["eval_method"] == "enumerate" and row["hellinger2_stderr"] == 0.0
    assert row["hellinger2"] == pytest.approx(
        _enumerated_hellinger2(task, reader.sequence_logprob), abs=1e-9)
    rng = np.random.default_rng(1)
    prompts, tokens = task.sample_demonstrations(40, rng)
    parents = tokens[:, :-1]
    ext = reader.extension_logprobs(prompts, parents)
    for a in range(task.vocab_size):
        full = np.concatenate([parents, np.full((40, 1), a)], axis=1)
        np.testing.assert_allclose(ext[:, a], reader.sequence_logprob(prompts, full),
                                   atol=1e-9)
    expert = task.expert.extension_logprobs(prompts, parents)  # the protocol's default path
    for a in range(task.vocab_size):
        full = np.concatenate([parents, np.full((40, 1), a)], axis=1)
        np.testing.assert_allclose(expert[:, a], task.expert.sequence_logprob(prompts, full),
                                   atol=1e-12)
    fewer = score(task, model, eval_samples=10_000)  # enumeration would cost more: sampled
    assert fewer["eval_method"] == "monte_carlo"


def test_hf_policy_saves_without_pickle(ar_fit, tmp_path):
    from agents import load_policy
    from agents.hf_lm import load_pretrained
    from evaluation.adapters import load_policy_file

    task, policy = ar_fit
    prompts, tokens = task.sample_demonstrations(50, np.random.default_rng(5))
    want = policy.token_logprobs(prompts, tokens)
    policy.save(tmp_path / "p.npz")
    np.testing.assert_allclose(load_policy(tmp_path / "p.npz").token_logprobs(prompts, tokens),
                               want, atol=1e-12)
    out = policy.save_pretrained(tmp_path / "dir")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not [p for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    np.testing.assert_allclose(load_pretrained(out).token_logprobs(prompts, tokens), want,
                               atol=1e-12)
    model, loaded_task, kind = load_policy_file(out, None, "--policy")
    assert kind == "hf-pretrained" and loaded_task.params == task.params
    np.testing.assert_allclose(model.token_logprobs(prompts, tokens), want, atol=1e-12)
    # a plain save_pretrained directory (e.g. TRL's) needs the task
    policy.net.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="--policy: .*has no ntp_gym.json: give the task"):
        load_policy_file(tmp_path / "plain", None, "--policy")
    plain, _, _ = load_policy_file(tmp_path / "plain", task, "--policy")
    np.testing.assert_allclose(plain.token_logprobs(prompts, tokens), want, atol=1e-12)
    with pytest.raises(ValueError, match="fitted on"):
        load_policy_file(out, make_task(AR_LINEAR, horizon=4, task_seed=9), "--policy")
    (tmp_path / "plain" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"--policy: .*\['pytorch_model.bin'\]: only "
                                         "safetensors"):
        load_policy_file(tmp_path / "plain", task, "--policy")
    (tmp_path / "plain" / "pytorch_model.bin").unlink()
    config = (tmp_path / "plain" / "config.json")
    config.write_text(config.read_text().replace('"model_type"', '"auto_map": {}, "model_type"'))
    with pytest.raises(ValueError, match="remote code"):
        load_policy_file(tmp_path / "plain", task, "--policy")


def test_hf_modes_and_other_model_types():
    from agents import make_agent

    star = make_task(PATH_STAR)
    demos = collect_demonstrations(star, 64, 0)
    teacherless = make_agent("hf:gpt2?n_layer=1&n_embd=16&mode=teacherless&steps=3")
    policy = teacherless.fit(star, demos, np.random.default_rng(0))
    prompts = demos.prompts[:3]
    first = policy.next_token_logprobs(prompts, demos.tokens[:3, :2])
    other = policy.next_token_logprobs(prompts, (demos.tokens[:3, :2] + 1) % 20)
    np.testing.assert_allclose(first, other)  # teacherless ignores its own previous tokens
    with pytest.raises(ValueError, match="target_order='reverse'"):
        make_agent("hf:gpt2?mode=reverse&steps=2").fit(star, demos)
    reverse = make_task(PATH_STAR, target_order="reverse")
    make_agent("hf:gpt2?n_layer=1&n_embd=16&mode=reverse&steps=2").fit(
        reverse, collect_demonstrations(reverse, 16, 0))
    ar = make_task(AR_LINEAR, horizon=4)
    llama = make_agent("hf:llama?hidden_size=16&intermediate_size=32&steps=2").fit(
        ar, collect_demonstrations(ar, 16, 0))
    assert llama.info["model_type"] == "llama" and llama.info["parameters"] < 20_000


def test_sweep_stores_exact_hf_row(tmp_path):
    """The issue's acceptance sweep (fewer steps, H=4): exact rows for both agents, the HF
    row's D_H^2 well below the uniform policy's (enumerated here)."""
    import pandas as pd

    from evaluation.cli import main

    main(["sweep", "--env", AR_LINEAR, "--agents",
          "hf:gpt2?n_layer=1&n_embd=32&steps=150&warmup=20,logloss", "--n-train", "1000",
          "--horizons", "4", "--seeds", "1", "--out", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "results.csv").set_index("agent")
    assert set(rows["status"]) == {"ok"} and set(rows["eval_method"]) == {"enumerate"}
    task = make_task(AR_LINEAR, horizon=4)
    uniform = _enumerated_hellinger2(
        task, lambda p, s: np.full(len(s), -task.horizon * np.log(task.vocab_size)))
    assert rows.loc["hf:gpt2?n_layer=1&n_embd=32&steps=150&warmup=20", "hellinger2"] < \
        0.3 * uniform
