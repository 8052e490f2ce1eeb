"""A text view of every task for HuggingFace ``transformers``, ``datasets`` and TRL.

Each token of a task is one word: action token ``a`` (``0 <= a < vocab_size``) has word id
``a`` and prompt tokens get ids after them (or share the action token's id where the task
writes both with the same word, e.g. PathStar's node labels). Texts are words separated by
single spaces; a completion starts with a space so that ``prompt + completion`` is the
whole sequence's text (TRL tokenizes it that way). Words:

* PathStar: node labels ``"0" .. "N-1"`` and the separators ``| / =`` (prompt and target
  share them);
* MultiplicationCoT: digits, ``+ x = ( )`` and pair tokens ``"3x7"`` (prompt digits share
  the target's digits); ParityCoT: ``"0"``, ``"1"``, ... (prompt bits share ``"0"``/``"1"``);
* any other task: ``"t{a}"`` for action tokens and ``"p{i}"`` for prompt tokens.

Then the special tokens ``<bos> <eos> <pad> <unk>``. :func:`tokenizer` is a
``PreTrainedTokenizerFast`` (tokenizers' WordLevel model, whitespace split) over these words;
:func:`prompt_dataset` draws prompts as a ``datasets.Dataset``; :func:`reward_functions` are
TRL reward functions. ``transformers``/``tokenizers`` (the ``hf`` extra) are imported only by
:func:`tokenizer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ntp_envs.task import REWARD_FLOOR, SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_int

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "TaskText", "prompt_dataset", "reward_functions", "text_view",
           "tokenizer"]

SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                  "unk_token": "<unk>"}
"""The special tokens TRL needs, after the task's words (in this order)."""

PATH_STAR = "ntp_envs/PathStar-v0"
MULTIPLICATION = "ntp_envs/MultiplicationCoT-v0"
PARITY = "ntp_envs/ParityCoT-v0"


def _words(task: SequenceTask) -> tuple[list[str], list[str]]:
    """The words of the task's action tokens and of its prompt tokens."""
    vocab, prompt_vocab = task.vocab_size, task.prompt_vocab_size
    if task.env_id == PATH_STAR and "layout" in task.extras:
        names = task.extras["layout"].separators()
        words = [names.get(a, str(a)) for a in range(vocab)]
        return words, words[:prompt_vocab]
    if task.env_id == MULTIPLICATION:
        from ntp_envs.multiplication_cot import token_text

        return [token_text(a) for a in range(vocab)], [str(i) for i in range(prompt_vocab)]
    if task.env_id == PARITY:
        return [str(a) for a in range(vocab)], [str(i) for i in range(prompt_vocab)]
    return [f"t{a}" for a in range(vocab)], [f"p{i}" for i in range(prompt_vocab)]


@dataclass(frozen=True, eq=False)
class TaskText:
    """The words of one task and the maps between its token arrays and texts (module doc)."""

    action_words: tuple[str, ...]
    prompt_words: tuple[str, ...]
    words: tuple[str, ...]
    """Every word in id order: the action words, the prompt words not among them, then
    the special tokens."""
    prompt_token_ids: IntArray
    """Word id of each prompt token."""

    @property
    def vocab_size(self) -> int:
        """Number of word ids (special tokens included)."""
        return len(self.words)

    @property
    def special_ids(self) -> dict[str, int]:
        """Word id of each special token, keyed as :data:`SPECIAL_TOKENS`."""
        index = {w: i for i, w in enumerate(self.words)}
        return {key: index[word] for key, word in SPECIAL_TOKENS.items()}

    def prompt_ids(self, prompts: IntArray) -> IntArray:
        """Word ids ``(B, L)`` of prompts ``(B, L)``."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.size and (prompts.min() < 0 or prompts.max() >= len(self.prompt_words)):
            raise ValueError(f"prompt tokens must lie in [0, {len(self.prompt_words) - 1}]")
        return self.prompt_token_ids[prompts]

    def prompts_of_ids(self, ids: IntArray) -> IntArray:
        """Inverse of :meth:`prompt_ids`; ValueError for an id that is no prompt token's."""
        ids = np.asarray(ids, dtype=np.int64)
        inverse = np.full(self.vocab_size, -1, dtype=np.int64)
        inverse[self.prompt_token_ids] = np.arange(len(self.prompt_token_ids))
        out = inverse[np.clip(ids, 0, self.vocab_size - 1)]
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size or out.min() < 0):
            raise ValueError("prompt_ids must be word ids of prompt tokens "
                             f"({sorted(set(self.prompt_token_ids.tolist()))})")
        return out

    def prompt_text(self, prompt: IntArray) -> str:
        """The text of one prompt ``(L,)``."""
        return " ".join(self.words[i] for i in self.prompt_ids(prompt))

    def completion_text(self, tokens: IntArray) -> str:
        """The text of one completion ``(H,)``: a leading space, then its words."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= len(self.action_words)):
            raise ValueError(f"tokens must lie in [0, {len(self.action_words) - 1}]")
        return "".join(" " + self.action_words[a] for a in tokens)

    def parse_prompt(self, text: str) -> IntArray:
        """Prompt tokens ``(L,)`` of a prompt text; ValueError for a word no prompt token has."""
        index = {w: i for i, w in enumerate(self.prompt_words)}
        try:
            return np.array([index[w] for w in text.split()], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"prompt text holds {err.args[0]!r}, which is no prompt token's "
                             "word") from None

    def parse_completion(self, text: str) -> IntArray | None:
        """Action tokens of a completion text (special tokens dropped); ``None`` when a word
        is no action token's."""
        index = {w: a for a, w in enumerate(self.action_words)}
        specials = set(SPECIAL_TOKENS.values())
        words = [w for w in text.replace("<", " <").replace(">", "> ").split()
                 if w not in specials]
        if any(w not in index for w in words):
            return None
        return np.array([index[w] for w in words], dtype=np.int64)


def text_view(task: SequenceTask) -> TaskText:
    """The words of ``task`` and its text maps (module doc)."""
    action, prompt = _words(task)
    specials = list(SPECIAL_TOKENS.values())
    for kind, words in (("action", action), ("prompt", prompt)):
        if len(set(words)) != len(words) or any(not w or w != w.strip() or " " in w
                                                or w in specials for w in words):
            raise ValueError(f"{task.env_id}: {kind} words must be distinct, non-empty, "
                             f"without spaces and no special token, got {words}")
    index = {w: a for a, w in enumerate(action)}
    extra = [w for w in prompt if w not in index]
    for w in extra:
        index[w] = len(index)
    prompt_ids = np.array([index[w] for w in prompt], dtype=np.int64)
    return TaskText(tuple(action), tuple(prompt), tuple(action + extra + specials), prompt_ids)


def tokenizer(task: SequenceTask) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` over the task's words (WordLevel, whitespace split) with
    the special tokens of :data:`SPECIAL_TOKENS`; it adds none when encoding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    view = text_view(task)
    vocab = {w: i for i, w in enumerate(view.words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        model_max_length=task.prompts.prompt_length + task.horizon + 1,
        **SPECIAL_TOKENS,
    )


def prompt_dataset(task: SequenceTask, n: int, seed: int) -> datasets.Dataset:
    """``n`` prompts drawn from the task's prompt law with ``seed``: columns ``prompt``
    (text) and ``prompt_ids`` (its word ids)."""
    import datasets

    n = check_int("n", n, 1)
    seed = check_int("seed", seed, 0)
    view = text_view(task)
    prompts = task.prompts.sample(n, np.random.default_rng(seed))
    return datasets.Dataset.from_dict({
        "prompt": [view.prompt_text(p) for p in prompts],
        "prompt_ids": view.prompt_ids(prompts).tolist(),
    })


def _parse_batch(view: TaskText, task: SequenceTask, prompts: list[str],
                 completions: list[str]) -> tuple[IntArray, IntArray, np.ndarray]:
    """Suite prompts ``(B, L)``, tokens ``(B, H)`` and which completions are well formed
    (``horizon`` action words; malformed rows hold zeros)."""
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions must have the same length, got "
                         f"{len(prompts)} and {len(completions)}")
    length = task.prompts.prompt_length
    suite_prompts = np.zeros((len(prompts), length), dtype=np.int64)
    tokens = np.zeros((len(prompts), task.horizon), dtype=np.int64)
    ok = np.zeros(len(prompts), dtype=bool)
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("prompts and completions must be texts (TRL's standard format), "
                             f"got {type(prompt).__name__} and {type(completion).__name__}")
        parsed_prompt = view.parse_prompt(prompt)
        if len(parsed_prompt) != length:
            raise ValueError(f"a prompt must hold {length} tokens, got {len(parsed_prompt)}: "
                             f"{prompt!r}")
        suite_prompts[i] = parsed_prompt
        parsed = view.parse_completion(completion)
        if parsed is not None and len(parsed) == task.horizon:
            tokens[i], ok[i] = parsed, True
    return suite_prompts, tokens, ok


def _task_returns(task: SequenceTask, prompts: IntArray, tokens: IntArray) -> FloatArray:
    """The env's return of each sequence: the sum of ``task.reward`` over its tokens."""
    if type(task).reward is SequenceTask.reward:  # the expert's clipped log-probabilities
        logp = task.expert.token_logprobs(prompts, tokens)
        return np.maximum(logp, REWARD_FLOOR).sum(axis=1)
    return np.array([sum(task.reward(p, t[:h], int(t[h])) for h in range(len(t)))
                     for p, t in zip(prompts, tokens, strict=True)], dtype=np.float64)


def reward_functions(task: SequenceTask) -> list[Callable[..., list[float]]]:
    """TRL reward functions ``(prompts, completions, **kwargs) -> list[float]`` on texts of
    :func:`tokenizer`'s words, in this order:

    * ``task_reward``: on a task with an answer (PathStar, the CoT tasks) 1.0 when the last
      ``answer_length`` tokens equal the expert's (PathStar: the exact path), else 0.0; on
      another task the env's return (sum of its per-token rewards);
    * ``expert_loglik``: the expert's log-likelihood of the completion, each token's
      log-probability clipped below at ``REWARD_FLOOR`` (distribution matching).

    A completion that is not ``horizon`` action words gets 0.0 (answer tasks) or
    ``horizon * REWARD_FLOOR``.
    """
    view = text_view(task)
    floor = float(task.horizon * REWARD_FLOOR)
    answer = int(task.answer_length or 0)

    def task_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        suite_prompts, tokens, ok = _parse_batch(view, task, prompts, completions)
        if answer:
            out = np.zeros(len(ok))
            if ok.any():
                target = task.expert.deterministic_sequences(suite_prompts[ok])
                if target is None:
                    raise ValueError(f"{task.env_id}: task_reward needs a deterministic expert")
                out[ok] = (tokens[ok, -answer:] == target[:, -answer:]).all(axis=1)
            return out.tolist()
        out = np.full(len(ok), floor)
        if ok.any():
            out[ok] = _task_returns(task, suite_prompts[ok], tokens[ok])
        return out.tolist()

    def expert_loglik(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        suite_prompts, tokens, ok = _parse_batch(view, task, prompts, completions)
        out = np.full(len(ok), floor)
        if ok.any():
            logp = task.expert.token_logprobs(suite_prompts[ok], tokens[ok])
            out[ok] = np.maximum(logp, REWARD_FLOOR).sum(axis=1)
        return out.tolist()

    return [task_reward, expert_loglik]
