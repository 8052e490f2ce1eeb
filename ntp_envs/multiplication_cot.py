"""MultiplicationCoT-v0: multi-digit multiplication, answered directly or after a long CoT."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np

from ntp_envs.base import SequenceEnv
from ntp_envs.sequence_model import DeterministicModel, PromptDistribution, UniformPrompts
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import IntArray
from ntp_envs.validation import check_float, check_int, reject_unknown

ENV_ID = "ntp_envs/MultiplicationCoT-v0"
COT_MODES = ("none", "long")
ANSWER_ORDERS = ("msd", "lsd")
PLUS, TIMES, EQUALS, OPEN, CLOSE = 10, 11, 12, 13, 14
PAIR0 = 15
"""Pair token ``d1xd2`` (``pair_tokens=True``) is ``PAIR0 + 10 d1 + d2``."""
SYMBOLS = {PLUS: "+", TIMES: "x", EQUALS: "=", OPEN: "(", CLOSE: ")"}
MAX_LISTED_DIGITS = 3
"""Up to this many digits the train and test laws list their pairs (exact evaluation)."""

DEFAULTS: dict[str, Any] = {
    "num_digits": 2,
    "cot": "long",
    "pair_tokens": False,
    "answer_order": "msd",
    "test_fraction": 0.25,
    "split_seed": 0,
    "horizon": None,
}


def token_text(token: int) -> str:
    """The text of one token: a digit, a symbol, or a pair ``"3x7"``."""
    if 0 <= token <= 9:
        return str(token)
    if token in SYMBOLS:
        return SYMBOLS[token]
    if PAIR0 <= token < PAIR0 + 100:
        return f"{(token - PAIR0) // 10}x{(token - PAIR0) % 10}"
    raise ValueError(f"token must lie in [0, {PAIR0 + 99}], got {token}")


def text_token(text: str) -> int:
    """Inverse of :func:`token_text`."""
    if len(text) == 1 and text.isdigit():
        return int(text)
    for token, symbol in SYMBOLS.items():
        if text == symbol:
            return token
    if len(text) == 3 and text[0].isdigit() and text[1] == "x" and text[2].isdigit():
        return PAIR0 + 10 * int(text[0]) + int(text[2])
    raise ValueError(f"unknown token text {text!r}")


def _digits(values: IntArray, width: int) -> list[IntArray]:
    """Big-endian zero-padded digits of ``values`` as ``width`` columns."""
    return [(values // 10**k) % 10 for k in range(width - 1, -1, -1)]


def operands(prompts: IntArray, num_digits: int) -> tuple[IntArray, IntArray]:
    """The two numbers of each prompt (digits, most significant first)."""
    weights = 10 ** np.arange(num_digits - 1, -1, -1, dtype=np.int64)
    prompts = np.asarray(prompts, dtype=np.int64)
    return prompts[:, :num_digits] @ weights, prompts[:, num_digits:] @ weights


def multiplication_sequences(
    prompts: IntArray, num_digits: int, cot: str, pair_tokens: bool = False,
    answer_order: str = "msd",
) -> IntArray:
    """The expert's token sequences ``(B, H)`` (format: :class:`MultiplicationCoTEnv`)."""
    a, b = operands(prompts, num_digits)
    batch = len(a)
    columns: list[IntArray] = []

    def const(token: int) -> None:
        columns.append(np.full(batch, token, dtype=np.int64))

    def place(k: int) -> None:  # 10^k as digits: 1 then k zeros
        const(1)
        for _ in range(k):
            const(0)

    little = [[(x // 10**i) % 10 for i in range(num_digits)] for x in (a, b)]
    if cot == "long":
        for which, digits in enumerate(little):
            if which:
                const(TIMES)
            const(OPEN)
            for i in range(num_digits):
                if i:
                    const(PLUS)
                columns.append(digits[i])
                const(TIMES)
                place(i)
            const(CLOSE)
        const(EQUALS)
        pairs = list(itertools.product(range(num_digits), range(num_digits)))
        for index, (i, j) in enumerate(pairs):
            if index:
                const(PLUS)
            if pair_tokens:
                columns.append(PAIR0 + 10 * little[0][i] + little[1][j])
            else:
                columns += [little[0][i], np.full(batch, TIMES, dtype=np.int64), little[1][j]]
            const(TIMES)
            place(i)
            const(TIMES)
            place(j)
        const(EQUALS)
        for index, (i, j) in enumerate(pairs):
            if index:
                const(PLUS)
            columns += _digits(little[0][i] * little[1][j] * 10 ** (i + j), i + j + 2)
        const(EQUALS)
    answer = _digits(a * b, 2 * num_digits)
    columns += answer if answer_order == "msd" else answer[::-1]
    return np.stack(columns, axis=1).astype(np.int64)


def format_sequence(prompt: IntArray, tokens: IntArray, num_digits: int) -> str:
    """Readable text of one episode, e.g. ``"12 x 34 = ( 2 x 1 + ... = 0 4 0 8"``."""
    prompt = np.asarray(prompt, dtype=np.int64)
    a = "".join(str(int(d)) for d in prompt[:num_digits])
    b = "".join(str(int(d)) for d in prompt[num_digits:])
    return f"{a} x {b} = " + " ".join(token_text(int(t)) for t in tokens)


def parse_sequence(text: str) -> tuple[IntArray, IntArray]:
    """Inverse of :func:`format_sequence`: ``(prompt digits, tokens)``; ValueError if malformed."""
    parts = text.split()
    if len(parts) < 5 or parts[1] != "x" or parts[3] != "=" or len(parts[0]) != len(parts[2]):
        raise ValueError(f"text must start with 'A x B = ' (equal digit counts), got {text!r}")
    if not (parts[0].isdigit() and parts[2].isdigit()):
        raise ValueError(f"the operands must be digits, got {parts[0]!r} and {parts[2]!r}")
    prompt = np.array([int(c) for c in parts[0] + parts[2]], dtype=np.int64)
    return prompt, np.array([text_token(t) for t in parts[4:]], dtype=np.int64)


def read_answer(tokens: IntArray, num_digits: int, answer_order: str = "msd") -> IntArray:
    """The numbers written by the last ``2 num_digits`` tokens of ``(B, H)`` sequences."""
    tokens = np.asarray(tokens, dtype=np.int64)[:, -2 * num_digits :]
    if (tokens > 9).any():
        raise ValueError("the answer tokens must be digits")
    powers = 10 ** np.arange(2 * num_digits - 1, -1, -1, dtype=np.int64)
    return tokens @ (powers if answer_order == "msd" else powers[::-1])


def held_out(a: IntArray, b: IntArray, test_fraction: float, split_seed: int) -> IntArray:
    """Whether each pair ``(a, b)`` is in the test split: a fixed hash of ``(a, b, seed)``.

    The hash is splitmix64 of ``a * 2^32 + b`` xor a seed-derived constant, read as a
    uniform number in ``[0, 1)``; a pair is held out when it is below ``test_fraction``.
    """
    with np.errstate(over="ignore"):
        z = (np.asarray(a, dtype=np.uint64) << np.uint64(32)) + np.asarray(b, dtype=np.uint64)
        z ^= np.uint64(0x9E3779B97F4A7C15) * np.uint64(split_seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 < test_fraction


def digits_of(a: IntArray, b: IntArray, num_digits: int) -> IntArray:
    """Prompts ``(B, 2 num_digits)``: the digits of ``a`` then ``b``, most significant first."""
    return np.stack(_digits(np.asarray(a), num_digits) + _digits(np.asarray(b), num_digits),
                    axis=1).astype(np.int64)


class SplitPairs(PromptDistribution):
    """Uniform operand pairs of one split (rejection sampling; for supports too big to list)."""

    def __init__(self, num_digits: int, test: bool, test_fraction: float, split_seed: int):
        self.prompt_length = 2 * num_digits
        self.num_digits, self.test = num_digits, test
        self.test_fraction, self.split_seed = test_fraction, split_seed

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        low, high = 10 ** (self.num_digits - 1), 10**self.num_digits
        out: list[IntArray] = []
        have = 0
        while have < n:
            a, b = rng.integers(low, high, size=(2, 2 * n))
            keep = held_out(a, b, self.test_fraction, self.split_seed) == self.test
            out.append(digits_of(a[keep], b[keep], self.num_digits))
            have += int(keep.sum())
        return np.concatenate(out)[:n]


def multiplication_horizon(num_digits: int, cot: str, pair_tokens: bool = False) -> int:
    """Sequence length of the format (the answer alone has ``2 num_digits`` tokens)."""
    prompt = np.full((1, 2 * num_digits), 1, dtype=np.int64)
    return int(multiplication_sequences(prompt, num_digits, cot, pair_tokens).shape[1])


def split_laws(num_digits: int, test_fraction: float, split_seed: int
               ) -> tuple[PromptDistribution, PromptDistribution]:
    """``(train, test)`` prompt laws: uniform over the operand pairs of each split."""
    if num_digits > MAX_LISTED_DIGITS:
        return (SplitPairs(num_digits, False, test_fraction, split_seed),
                SplitPairs(num_digits, True, test_fraction, split_seed))
    values = np.arange(10 ** (num_digits - 1), 10**num_digits, dtype=np.int64)
    a, b = (grid.ravel() for grid in np.meshgrid(values, values, indexing="ij"))
    test = held_out(a, b, test_fraction, split_seed)
    if test.all() or not test.any():
        raise ValueError(f"test_fraction {test_fraction} leaves a split empty at "
                         f"num_digits={num_digits}")
    return (UniformPrompts(digits_of(a[~test], b[~test], num_digits)),
            UniformPrompts(digits_of(a[test], b[test], num_digits)))


def make_multiplication_cot_task(**kwargs: Any) -> SequenceTask:
    """Build the MultiplicationCoT task (see :class:`MultiplicationCoTEnv`)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("MultiplicationCoT-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    num_digits = check_int("num_digits", p["num_digits"], 1, 4)
    cot = p["cot"]
    if cot not in COT_MODES:
        raise ValueError(f"cot must be one of {list(COT_MODES)}, got {cot!r}")
    if not isinstance(p["pair_tokens"], bool):
        raise ValueError(f"pair_tokens must be a bool, got {p['pair_tokens']!r}")
    pair_tokens = p["pair_tokens"]
    if pair_tokens and cot == "none":
        raise ValueError("pair_tokens=True needs cot='long' (there are no pairs without CoT)")
    answer_order = p["answer_order"]
    if answer_order not in ANSWER_ORDERS:
        raise ValueError(f"answer_order must be one of {list(ANSWER_ORDERS)}, got "
                         f"{answer_order!r}")
    test_fraction = check_float("test_fraction", p["test_fraction"], 0.0, 1.0,
                                low_open=True, high_open=True)
    split_seed = check_int("split_seed", p["split_seed"], 0)
    horizon = multiplication_horizon(num_digits, cot, pair_tokens)
    if p["horizon"] is not None and check_int("horizon", p["horizon"], 1) != horizon:
        raise ValueError(f"horizon is set by num_digits and cot: it must be {horizon} "
                         f"(or None), got {p['horizon']}")
    p["horizon"] = horizon
    train, test = split_laws(num_digits, test_fraction, split_seed)
    vocab = 10 if cot == "none" else PAIR0 + 100 if pair_tokens else PAIR0

    return SequenceTask(
        env_id=ENV_ID,
        params=p,
        horizon=horizon,
        vocab_size=vocab,
        prompt_vocab_size=10,
        prompts=train,
        expert=DeterministicModel(
            functools.partial(multiplication_sequences, num_digits=num_digits, cot=cot,
                              pair_tokens=pair_tokens, answer_order=answer_order),
            vocab, horizon, 2 * num_digits),
        learner_class=None,
        reward_doc="0 for the expert's token, REWARD_FLOOR (-100) for any other",
        answer_length=2 * num_digits,
        test_prompts=test,
    )


class MultiplicationCoTEnv(SequenceEnv):
    """``num_digits`` x ``num_digits`` multiplication, with or without Malach's long CoT.

    ## Description
    The prompt is the digits of two ``num_digits``-digit numbers ``A`` and ``B`` (no leading
    zero; most significant digit first). The deterministic expert writes (``cot="long"``,
    Malach 2023's format) or skips (``cot="none"``) a chain of thought, then the product as
    ``2 num_digits`` zero-padded digits. Tokens: digits ``0-9`` (ids 0-9), ``+`` (10), ``x``
    (11), ``=`` (12), ``(`` (13), ``)`` (14); with ``pair_tokens=True`` (Malach's "joined
    tokens") a digit pair ``dxe`` is one token, id ``15 + 10 d + e``. For ``12 x 34`` the long
    CoT reads (``format_sequence``; 78 tokens, the prompt not included)::

        ( 2 x 1 + 1 x 1 0 ) x ( 4 x 1 + 3 x 1 0 ) =
        2 x 4 x 1 x 1 + 2 x 3 x 1 x 1 0 + 1 x 4 x 1 0 x 1 + 1 x 3 x 1 0 x 1 0 =
        0 8 + 0 6 0 + 0 4 0 + 0 3 0 0 = 0 4 0 8

    i.e. both operands expanded into digit x place terms (least significant first, places
    written as digits), every digit-pair product ``a_i x b_j x 10^i x 10^j`` (pairs in the
    order ``(i, j) = (0, 0), (0, 1), ...``), the partial products ``a_i b_j 10^(i+j)``
    zero-padded to ``i + j + 2`` digits, and the answer (``2 num_digits`` digits). Without
    CoT the sequence is the answer alone. ``answer_order="lsd"`` writes the answer least
    significant digit first instead (Malach writes it most significant first, ``"msd"``).
    ``parse_sequence`` inverts the text form; ``read_answer`` reads the product.

    Every step is linear in the one-hot context except the digit-pair products (a product
    of two one-hot digits: the answer digits of ``a_i b_j`` need their interaction), which
    ``pair_tokens`` makes a lookup of one token. Given the partial products (sum ``P``), an
    answer digit is one floor or mod of a linear form of the context: most significant first,
    digit ``k`` is ``floor((P - written part) / 10^k)``, whose argument spans ``10^(k+1)``
    values (it needs coefficients precise to ``10^-(k+1)``); least significant first, it is
    the column sum plus the carry (itself linear in the context and the digits written)
    mod 10, an argument of at most ``~3 num_digits`` values.

    Train and test operand pairs are disjoint: a pair is held out when a fixed hash of
    ``(A, B, split_seed)`` falls below ``test_fraction``. ``task.prompts`` (demonstrations,
    divergences) is uniform over the training pairs, ``task.test_prompts`` over the held-out
    ones (answer accuracy).

    ## Action Space
    ``Discrete(V)``: ``V = 10`` without CoT, 15 with it, 115 with pair tokens.

    ## Observation Space
    ``MultiDiscrete`` of length ``2 num_digits + 1 + H``: ``[digits of A, digits of B, h,
    a_1..a_h, V, ..., V]``.

    ## Rewards
    The expert is deterministic and open-loop: reward 0 for emitting the expert's token,
    ``REWARD_FLOOR = -100`` for any other.

    ## Episode End
    Terminated after exactly ``H`` tokens (78 for 2 x 2 digits with CoT, 175 for 3 x 3, 4 and
    6 without; pair tokens save 2 per digit pair); never truncated.

    ## Arguments
    ``num_digits`` (2, in [1, 4]; up to 3 both splits list their pairs, so evaluation is
    exact), ``cot`` (``"long"``; one of none, long), ``pair_tokens`` (False; needs ``long``),
    ``answer_order`` (``"msd"``; or ``"lsd"``),
    ``test_fraction`` (0.25, in (0, 1)), ``split_seed`` (0), ``horizon`` (None: derived; a
    given value must equal it).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        num_digits: int = 2,
        cot: str = "long",
        pair_tokens: bool = False,
        answer_order: str = "msd",
        test_fraction: float = 0.25,
        split_seed: int = 0,
        horizon: int | None = None,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("MultiplicationCoT-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_multiplication_cot_task(
            num_digits=num_digits, cot=cot, pair_tokens=pair_tokens, answer_order=answer_order,
            test_fraction=test_fraction, split_seed=split_seed, horizon=horizon,
        )
        super().__init__(task, render_mode=render_mode)
