"""TRL on the suite: SFT on the expert's demonstrations, then GRPO on the task's own reward.

A tiny causal LM (GPT-NeoX with rotary positions by default, or GPT-2: ``--model-type``) is
built from a config (random init, no download) over the task's words
(:func:`ntp_envs.hf.tokenizer`). TRL's ``SFTTrainer`` fits it to the expert's demonstrations
in prompt-completion form (:meth:`experts.Demonstrations.to_hf_dataset`): the loss on the
completion tokens is the next-token log loss, i.e. ``LogLossBC`` on a transformers model.
TRL's ``GRPOTrainer`` then samples completions and follows the suite's reward functions
(:func:`ntp_envs.hf.reward_functions`: the task's reward, 1 for the exact path / right
answer, and optionally the expert's log-likelihood of the completion). The suite scores the
model before, after SFT and after GRPO (:func:`evaluation.score.score`: D_H^2, KL, TV to the
expert; greedy answer accuracy; the mean task reward of sampled completions), prints the
numbers and writes them to ``OUT/trl_sft_grpo.json``; the final model is saved with
``save_pretrained`` to ``OUT/model`` (``ntp-bench evaluate --policy OUT/model``).

Everything runs on the CPU, offline (``HF_HUB_OFFLINE=1``, ``report_to="none"``).
Run: ``python examples/trl_sft_grpo.py --out runs/trl [--task pathstar|parity]
[--model-type gpt_neox|gpt2] [--sft-steps N] [--grpo-steps N]`` (defaults: a few minutes on
one core).
"""

from __future__ import annotations

import os

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"  # nothing below needs the Hub: make any attempt fail fast
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.hf_lm import HFPolicy, HFSequenceModel, build_model  # noqa: E402
from evaluation.score import score  # noqa: E402
from experts import collect_demonstrations  # noqa: E402
from ntp_envs import make_task  # noqa: E402
from ntp_envs.hf import prompt_dataset, reward_functions, text_view, tokenizer  # noqa: E402
from ntp_envs.task import SequenceTask  # noqa: E402

TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "pathstar": ("ntp_envs/PathStar-v0", {"degree": 2, "path_length": 4, "num_nodes": 8}),
    "parity": ("ntp_envs/ParityCoT-v0", {"num_bits": 4, "subset_size": 3}),
}
"""The small tasks the example runs on (``--task``)."""
RESULT_FILE = "trl_sft_grpo.json"


def small_task(name: str) -> SequenceTask:
    """The task called ``name`` in :data:`TASKS`; ValueError naming ``--task`` otherwise."""
    if name not in TASKS:
        raise ValueError(f"--task must be one of {sorted(TASKS)}, got {name!r}")
    env_id, kwargs = TASKS[name]
    return make_task(env_id, **kwargs)


MODEL_TYPES = ("gpt_neox", "gpt2")
"""Model types of ``--model-type`` (GPT-NeoX: rotary positions, as the path-star agents)."""


def tiny_model(task: SequenceTask, model_type: str = "gpt_neox", n_layer: int = 2,
               n_embd: int = 64, seed: int = 0) -> Any:
    """A randomly initialised causal LM of ``model_type`` over the task's words (4 heads, no
    download)."""
    if model_type == "gpt2":
        sizes = {"n_layer": n_layer, "n_embd": n_embd, "n_head": 4}
    else:
        sizes = {"num_hidden_layers": n_layer, "hidden_size": n_embd,
                 "num_attention_heads": 4, "intermediate_size": 4 * n_embd}
    return build_model(task, model_type, sizes, seed=seed)


def _common_args(out_dir: Path, steps: int, batch_size: int, lr: float,
                 seed: int) -> dict[str, Any]:
    """Training arguments both trainers share: CPU, fp32, no checkpoints, no reporting."""
    return {"output_dir": str(out_dir), "max_steps": steps,
            "per_device_train_batch_size": batch_size, "learning_rate": lr, "seed": seed,
            "use_cpu": True, "bf16": False, "gradient_checkpointing": False,
            "report_to": "none", "save_strategy": "no", "logging_steps": 1,
            "disable_tqdm": True, "dataloader_num_workers": 0}


def run_sft(task: SequenceTask, model: Any, n_demonstrations: int, steps: int, out_dir: Path,
            *, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> Any:
    """TRL ``SFTTrainer`` on ``n_demonstrations`` of the task's expert for ``steps`` steps
    (completion-only next-token log loss); returns the trainer (``trainer.model`` is
    ``model``, trained in place)."""
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    demos = collect_demonstrations(task, n_demonstrations, seed=seed)
    dataset = demos.to_hf_dataset(task).select_columns(["prompt", "completion"])
    config = SFTConfig(**_common_args(out_dir, steps, batch_size, lr, seed),
                       completion_only_loss=True, max_length=None, warmup_steps=min(10, steps),
                       lr_scheduler_type="cosine")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=tokenizer(task))
    trainer.remove_callback(PrinterCallback)  # the per-step dicts: in trainer.state instead
    trainer.train()
    return trainer


def recording(functions: Sequence[Callable[..., list[float]]],
              calls: list[dict[str, Any]]) -> list[Callable[..., list[float]]]:
    """``functions`` that also append each call's ``prompts``, ``completions`` and returned
    ``rewards`` to ``calls`` (TRL logs a reward under its function's ``__name__``: kept)."""
    def wrap(function: Callable[..., list[float]]) -> Callable[..., list[float]]:
        def recorded(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
            rewards = function(prompts, completions, **kwargs)
            calls.append({"name": function.__name__, "prompts": list(prompts),
                          "completions": list(completions), "rewards": list(rewards)})
            return rewards

        recorded.__name__ = function.__name__
        return recorded

    return [wrap(f) for f in functions]


def run_grpo(task: SequenceTask, model: Any, steps: int, out_dir: Path, *,
             n_prompts: int = 1024, num_generations: int = 4, batch_size: int = 32,
             lr: float = 3e-4, loglik_weight: float = 0.0, seed: int = 0,
             calls: list[dict[str, Any]] | None = None) -> Any:
    """TRL ``GRPOTrainer`` on the task's prompts for ``steps`` steps with the suite's reward
    functions (``task_reward`` weight 1, ``expert_loglik`` weight ``loglik_weight``);
    each reward call is recorded into ``calls`` when given. Returns the trainer."""
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    rewards = reward_functions(task)
    if calls is not None:
        rewards = recording(rewards, calls)
    dataset = prompt_dataset(task, n_prompts, seed).select_columns(["prompt"])
    config = GRPOConfig(**_common_args(out_dir, steps, batch_size, lr, seed),
                        num_generations=num_generations,
                        max_completion_length=task.horizon + 1, temperature=1.0,
                        reward_weights=[1.0, loglik_weight], beta=0.0, log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=config,
                          train_dataset=dataset, processing_class=tokenizer(task))
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer


def sampled_task_reward(task: SequenceTask, model: Any, n: int, seed: int) -> float:
    """Mean ``task_reward`` of completions the model samples (suite decoding, temperature 1)
    on ``n`` fresh prompts: what GRPO maximises."""
    view = text_view(task)
    reader = HFSequenceModel(model, task, "tf", torch.device("cpu"))
    rng = np.random.default_rng(seed)
    prompts = task.prompts.sample(n, rng)
    tokens = reader.sample(prompts, rng)
    task_reward = reward_functions(task)[0]
    return float(np.mean(task_reward([view.prompt_text(p) for p in prompts],
                                     [view.completion_text(t) for t in tokens])))


def suite_scores(task: SequenceTask, model: Any, *, eval_samples: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """The suite's numbers for ``model``: D_H^2, KL, TV (with their errors and how they were
    computed), greedy answer accuracy and the mean sampled task reward."""
    model.eval()
    row = score(task, model, label="trl", seed=seed, eval_samples=eval_samples)
    keys = ("hellinger2", "hellinger2_stderr", "kl", "kl_stderr", "tv", "tv_stderr",
            "eval_method", "answer_accuracy", "answer_accuracy_stderr")
    out = {k: row.get(k) for k in keys}
    out["sampled_task_reward"] = sampled_task_reward(task, model, min(eval_samples, 1000), seed)
    return out


def _rewards_logged(trainer: Any) -> list[float]:
    """The mean ``task_reward`` GRPO logged at each step."""
    return [float(log["rewards/task_reward/mean"]) for log in trainer.state.log_history
            if "rewards/task_reward/mean" in log]


def run(task_name: str, out: Path, *, model_type: str = "gpt_neox", sft_steps: int = 6000,
        grpo_steps: int = 1000, grpo_lr: float = 3e-4, grpo_prompts: int = 8192,
        n_demonstrations: int = 4000, n_layer: int = 2, n_embd: int = 64,
        eval_samples: int = 2000, loglik_weight: float = 0.0, seed: int = 0,
        threads: int = 1) -> dict[str, Any]:
    """The whole recipe (module doc); returns (and writes to ``out``) its numbers."""
    import datasets

    datasets.disable_progress_bars()
    task = small_task(task_name)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_model(task, model_type, n_layer, n_embd, seed)
    result: dict[str, Any] = {
        "task": {"env_id": task.env_id, "env_kwargs": TASKS[task_name][1],
                 "horizon": task.horizon},
        "model": {"type": model_type, "n_layer": n_layer, "n_embd": n_embd,
                  "parameters": int(sum(p.numel() for p in model.parameters()))},
        "settings": {"sft_steps": sft_steps, "grpo_steps": grpo_steps, "grpo_lr": grpo_lr,
                     "grpo_prompts": grpo_prompts,
                     "n_demonstrations": n_demonstrations, "eval_samples": eval_samples,
                     "loglik_weight": loglik_weight, "seed": seed, "threads": threads},
        "scores": {"untrained": suite_scores(task, model, eval_samples=eval_samples,
                                             seed=seed)},
    }
    began = time.perf_counter()
    sft = run_sft(task, model, n_demonstrations, sft_steps, out / "sft", seed=seed)
    result["sft"] = {"seconds": time.perf_counter() - began,
                     "final_loss": [log["loss"] for log in sft.state.log_history
                                    if "loss" in log][-1]}
    result["scores"]["sft"] = suite_scores(task, model, eval_samples=eval_samples, seed=seed)
    began = time.perf_counter()
    grpo = run_grpo(task, model, grpo_steps, out / "grpo", lr=grpo_lr, n_prompts=grpo_prompts,
                    loglik_weight=loglik_weight, seed=seed)
    result["grpo"] = {"seconds": time.perf_counter() - began,
                      "task_reward_logged": _rewards_logged(grpo)}
    result["scores"]["sft+grpo"] = suite_scores(task, model, eval_samples=eval_samples,
                                                seed=seed)
    HFPolicy(task, model, "tf", {"agent": "trl-sft-grpo"}).save_pretrained(out / "model")
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the JSON file and the model")
    parser.add_argument("--task", default="pathstar", choices=sorted(TASKS))
    parser.add_argument("--model-type", default="gpt_neox", choices=MODEL_TYPES)
    parser.add_argument("--sft-steps", type=int, default=6000)
    parser.add_argument("--grpo-steps", type=int, default=1000)
    parser.add_argument("--grpo-lr", type=float, default=3e-4, help="GRPO's learning rate")
    parser.add_argument("--grpo-prompts", type=int, default=8192,
                        help="fresh prompts GRPO samples from (its training set)")
    parser.add_argument("--n-demonstrations", type=int, default=4000)
    parser.add_argument("--eval-samples", type=int, default=2000)
    parser.add_argument("--loglik-weight", type=float, default=0.0,
                        help="weight of the expert_loglik reward in GRPO (task_reward: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag, value, low in (("--sft-steps", args.sft_steps, 1),
                             ("--grpo-steps", args.grpo_steps, 1),
                             ("--n-demonstrations", args.n_demonstrations, 1),
                             ("--grpo-prompts", args.grpo_prompts, 1),
                             ("--eval-samples", args.eval_samples, 2), ("--seed", args.seed, 0)):
        if value < low:
            parser.error(f"{flag} must be an integer >= {low}, got {value}")
    if not 0.0 < args.grpo_lr <= 1.0:
        parser.error(f"--grpo-lr must lie in (0, 1], got {args.grpo_lr}")
    if not 0.0 <= args.loglik_weight <= 1e3:
        parser.error(f"--loglik-weight must lie in [0, 1000], got {args.loglik_weight}")
    result = run(args.task, Path(args.out), model_type=args.model_type,
                 sft_steps=args.sft_steps, grpo_steps=args.grpo_steps, grpo_lr=args.grpo_lr,
                 grpo_prompts=args.grpo_prompts,
                 n_demonstrations=args.n_demonstrations,
                 eval_samples=args.eval_samples, loglik_weight=args.loglik_weight,
                 seed=args.seed)
    print(f"{result['task']['env_id']} {result['task']['env_kwargs']}, {args.model_type} "
          f"{result['model']['parameters']:,} parameters; SFT {args.sft_steps} steps "
          f"({result['sft']['seconds']:.0f} s), GRPO {args.grpo_steps} steps "
          f"({result['grpo']['seconds']:.0f} s)")
    print(f"{'model':<10} {'D_H^2':>16} {'KL':>10} {'TV':>7} {'accuracy':>9} "
          f"{'task reward':>12}  method")
    for name, s in result["scores"].items():
        print(f"{name:<10} {s['hellinger2']:>8.4f} +- {s['hellinger2_stderr']:<5.3f} "
              f"{s['kl']:>10.4f} {s['tv']:>7.4f} {s['answer_accuracy']:>9.4f} "
              f"{s['sampled_task_reward']:>12.4f}  {s['eval_method']}")
    print(f"written: {Path(args.out) / RESULT_FILE}, model: {Path(args.out) / 'model'}")


if __name__ == "__main__":
    sys.exit(main())
