"""TRL bridge end to end (examples/trl_sft_grpo.py): SFTTrainer on the suite's demonstrations
lowers the exact D_H^2 of a transformers model; GRPOTrainer runs its steps on the suite's
reward functions, whose values are recomputed here from the texts alone; no network."""

from __future__ import annotations

import importlib.util
import math
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
import torch  # noqa: E402

from ntp_envs.hf import text_view  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("trl_sft_grpo",
                                                  ROOT / "examples" / "trl_sft_grpo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["trl_sft_grpo"] = module
    spec.loader.exec_module(module)
    return module


example = _example()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def independent_hellinger2(task, model) -> float:
    """D_H^2 = 2 - 2 E_x sqrt(q(y*(x) | x)) for a deterministic expert, over every prompt of
    a uniform finite prompt law, from the model's raw logits (its first V word ids)."""
    prompts = task.prompts.contexts
    target = task.expert.deterministic_sequences(prompts)
    view = text_view(task)
    ids = np.concatenate([view.prompt_ids(prompts), target[:, :-1]], axis=1)
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(ids)).logits.double()
    length = prompts.shape[1]
    logp = torch.log_softmax(logits[:, length - 1:, :task.vocab_size], dim=-1)
    seq = logp.gather(2, torch.as_tensor(target)[:, :, None])[:, :, 0].sum(1).numpy()
    weights = np.exp(task.prompts.log_probs)
    return float(2.0 - 2.0 * np.sum(weights * np.exp(0.5 * seq)))


def test_sft_lowers_the_exact_hellinger_distance(tmp_path):
    task = example.small_task("parity")
    model = example.tiny_model(task, "gpt2", n_layer=1, n_embd=32, seed=0)
    before = example.suite_scores(task, model, eval_samples=200)
    assert before["eval_method"] == "deterministic_exact"
    assert before["hellinger2_stderr"] == 0.0
    assert before["hellinger2"] == pytest.approx(independent_hellinger2(task, model), abs=1e-9)
    trainer = example.run_sft(task, model, 512, 60, tmp_path / "sft")
    assert trainer.state.global_step == 60
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0]
    after = example.suite_scores(task, model, eval_samples=200)
    assert after["hellinger2"] == pytest.approx(independent_hellinger2(task, model), abs=1e-9)
    assert after["hellinger2"] < before["hellinger2"] - 0.2, (before, after)


def path_of(prompt: str) -> list[str]:
    """The source-to-goal path of a PathStar prompt text ``u v | ... / s g =``, walked here."""
    words = prompt.split()
    query = words.index("/")
    edges = [(words[i], words[i + 1]) for i in range(0, query, 3)]
    assert all(words[i + 2] == "|" for i in range(0, query, 3))
    source, goal = words[query + 1], words[query + 2]
    parent = {v: u for u, v in edges}
    path = [goal]
    while path[-1] != source:
        path.append(parent[path[-1]])
    return path[::-1]


def test_grpo_runs_on_the_suites_rewards(tmp_path):
    task = example.small_task("pathstar")
    model = example.tiny_model(task, "gpt2", n_layer=1, n_embd=32, seed=0)
    example.run_sft(task, model, 512, 40, tmp_path / "sft")  # well-formed completions
    calls: list[dict] = []
    steps = 3
    trainer = example.run_grpo(task, model, steps, tmp_path / "grpo", n_prompts=32,
                               num_generations=4, batch_size=8, loglik_weight=0.5,
                               calls=calls)
    assert trainer.state.global_step == steps
    task_calls = [c for c in calls if c["name"] == "task_reward"]
    loglik_calls = [c for c in calls if c["name"] == "expert_loglik"]
    assert len(task_calls) == len(loglik_calls) == steps
    for call in task_calls:
        assert len(call["completions"]) == 8
        # the same prompt num_generations times in a row: GRPO's groups
        assert all(len(set(call["prompts"][i:i + 4])) == 1 for i in range(0, 8, 4))
        for prompt, completion, reward in zip(call["prompts"], call["completions"],
                                              call["rewards"], strict=True):
            assert reward == float(completion.split() == path_of(prompt)), (prompt, completion)
    # the expert is deterministic: its log-likelihood is 0 on the path and < 0 off it
    for call, loglik_call in zip(task_calls, loglik_calls, strict=True):
        assert loglik_call["completions"] == call["completions"]
        for right, loglik in zip(call["rewards"], loglik_call["rewards"], strict=True):
            assert (loglik == 0.0) == (right == 1.0) and loglik <= 0.0
    logged = [log for log in trainer.state.log_history if "rewards/task_reward/mean" in log]
    assert len(logged) == steps
    for log, call, loglik in zip(logged, task_calls, loglik_calls, strict=True):
        assert log["rewards/task_reward/mean"] == pytest.approx(np.mean(call["rewards"]),
                                                                abs=1e-6)
        assert log["rewards/expert_loglik/mean"] == pytest.approx(np.mean(loglik["rewards"]),
                                                                  rel=1e-6)
        total = np.mean(np.array(call["rewards"]) + 0.5 * np.array(loglik["rewards"]))
        assert log["reward"] == pytest.approx(total, rel=1e-5, abs=1e-6)
    assert all(math.isfinite(log["loss"]) for log in logged)


def test_main_writes_the_numbers(tmp_path, capsys):
    import json

    from agents.hf_lm import load_pretrained

    example.main(["--out", str(tmp_path), "--task", "parity", "--sft-steps", "3",
                  "--grpo-steps", "1", "--n-demonstrations", "64", "--eval-samples", "50"])
    result = json.loads((tmp_path / example.RESULT_FILE).read_text())
    assert set(result["scores"]) == {"untrained", "sft", "sft+grpo"}
    assert len(result["grpo"]["task_reward_logged"]) == 1
    assert "untrained" in capsys.readouterr().out
    assert (tmp_path / "model" / "model.safetensors").is_file()
    policy = load_pretrained(tmp_path / "model")
    assert policy.task.env_id == "ntp_envs/ParityCoT-v0"


def test_doc_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "hf-trl.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "hf_trl_doc"}
    for block in blocks:
        exec(compile(block, "docs/hf-trl.md", "exec"), namespace)  # noqa: S102
    assert namespace["task_reward"]([namespace["view"].prompt_text(namespace["prompt"])],
                                    [namespace["right"]]) == [1.0]


def test_bad_flag_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        example.main(["--out", str(tmp_path), "--sft-steps", "0"])
    assert "--sft-steps must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
