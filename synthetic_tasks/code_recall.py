"""State-based recall (Merrill et al. 2026, "Olmo Hybrid", arXiv 2604.03444, Theorem 1).

A bit array, k pointer variables holding distinct addresses, n lines that swap two variables, and
queries ``bits[v]``: the answer is the bit at the address v holds after the swaps so far. Recall
load grows with the array size m, state-tracking load with the number of swaps n.

Two forms share the knobs and the meta labels:

* ``state_based_recall``, one token per bit, variable, address and line marker. The array is
  written as (address, bit) pairs over m distinct addresses drawn from an address vocabulary of
  ``num_addresses`` tokens (listed in increasing order). Retrieval is then by content, which is
  what attention does, and every address token is trained whatever m is: with positional
  addresses ``0 .. m-1`` the tokens of addresses beyond the training m would never be seen, and
  evaluating at larger m would measure untrained embeddings rather than recall.
* ``state_based_recall_text``, the Python program itself, one token per character, with the array
  as a list indexed by position (addresses in [0, m)).

Supervision (structural): ``"final"`` asks one query after the last swap; ``"dense"`` asks the
same variable after the initialisation line and after every swap line (n + 1 answers, the last
being the final query). It learns in far fewer steps. ``"probed"`` is dense and, after the
initialisation line, first asks every other variable once (in order a, b, ...; k + n answers):
before any swap the answer is a two-hop lookup (variable -> address -> bit), and probing every
variable trains that lookup for all of them, which tracking later needs, not only for q.

Bits (structural): ``"random"`` draws fair coins, so the array's count of ones predicts the
queried bit (the majority bit is right with probability about 1/2 + 0.4/sqrt(m)), a shortcut any
mixer finds; ``"balanced"`` arranges exactly m // 2 ones (one more half the time when m is odd)
uniformly, which takes that shortcut away. The shortcut is also the first step towards reading
the right bit: see docs/recall-protocol.md before training with ``"balanced"``.

Default ranges: both axes start where learning starts (the sweeps' curriculum ramps the
evaluation axes up from their low end): ``num_swaps`` from 0, where every answer is the plain
variable -> address -> bit lookup, and ``m`` from ``num_vars``, where the count of ones says most
about the answer; and the query asks ``a`` in every example (``query`` = 0). A query variable drawn
per example is harder to learn and adds nothing the theorem needs, since swaps carry every
variable's address into ``a``. Evidence for each default: docs/recall-protocol.md.

Meta per example: ``m``, ``num_swaps``, ``num_vars``, ``query`` (index of the queried variable,
``a`` = 0) and ``moved`` (whether the queried variable's final address differs from its initial
one; on unmoved examples reading the initial address is a shortcut, so report them apart). In
dense mode every query asks the same variable and ``moved`` describes the last one, after all
swaps; the earlier answers of a moved example may still be shortcut-readable.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import next_u64, randint, seed_state
from synthetic_tasks.base import Batch, Knob, Task, register
from synthetic_tasks.code_common import (
    begin_row,
    code_batch,
    codes,
    end_row,
    flat_buffers,
    put,
    put_decimal,
    supervise,
)

__all__ = ["StateBasedRecall", "StateBasedRecallText"]

_SUPERVISIONS = ("final", "dense", "probed")
_BITS = ("random", "balanced")
_VAR_NAMES = "abcdefghijklmnopqrstuvwxyz"


def _check_supervision(value) -> str:
    if value not in _SUPERVISIONS:
        raise ValueError(f"parameter 'supervision' must be one of {list(_SUPERVISIONS)}, got {value!r}")
    return value


def _check_bits(value) -> str:
    if value not in _BITS:
        raise ValueError(f"parameter 'bits' must be one of {list(_BITS)}, got {value!r}")
    return value


def _check_cross_knobs(ranges: dict[str, tuple[int, int]]) -> None:
    """Knob combinations that cannot be drawn: more variables than addresses, or no such variable."""
    if ranges["num_vars"][1] > ranges["m"][0]:
        raise ValueError(
            f"knob 'num_vars' (up to {ranges['num_vars'][1]}) must not exceed knob 'm' "
            f"(from {ranges['m'][0]}): every variable needs its own address"
        )
    if ranges["query"][0] > ranges["num_vars"][0] - 1:
        raise ValueError(
            f"knob 'query' (from {ranges['query'][0]}) must name an existing variable: at most "
            f"num_vars - 1 = {ranges['num_vars'][0] - 1}"
        )


@numba.njit(cache=True, inline="always")
def _draw_knobs(state, m_lo, m_hi, n_lo, n_hi, k_lo, k_hi, q_lo, q_hi):
    m = randint(state, m_lo, m_hi)
    n = randint(state, n_lo, n_hi)
    k = randint(state, k_lo, k_hi)
    q = randint(state, q_lo, min(q_hi, k - 1))
    return m, n, k, q


@numba.njit(cache=True, inline="always")
def _draw_bits(state, out, m, balanced):
    """m bits into out[:m]: fair coins, or (balanced) a uniform arrangement of m // 2 ones, one
    more with probability 1/2 when m is odd."""
    if not balanced:
        word = np.uint64(0)
        for j in range(m):
            if j & 63 == 0:
                word = next_u64(state)
            out[j] = np.int64((word >> np.uint64(j & 63)) & np.uint64(1))
        return
    ones = m // 2
    if m & 1:
        ones += randint(state, 0, 1)
    out[:m] = 0
    # Floyd's sampling of the positions of the ones.
    for j in range(m - ones, m):
        r = randint(state, 0, j)
        if out[r] == 1:
            r = j
        out[r] = 1


@numba.njit(cache=True, inline="always")
def _draw_pointers(state, addr, k, m):
    """k distinct addresses in [0, m) into addr[:k] (rejection; k <= 26)."""
    for v in range(k):
        while True:
            a = randint(state, 0, m - 1)
            fresh = True
            for u in range(v):
                if addr[u] == a:
                    fresh = False
            if fresh:
                addr[v] = a
                break


@numba.njit(cache=True, inline="always")
def _draw_swap(state, k):
    x = randint(state, 0, k - 1)
    y = randint(state, 0, k - 2)
    if y >= x:
        y += 1
    return x, y


@numba.njit(cache=True, inline="always")
def _max_queries(n_hi, k_hi, dense, probe):
    """The most queries `_draw_lines` places in one example."""
    return ((n_hi + 1) if dense else 1) + ((k_hi - 1) if probe else 0)


@numba.njit(cache=True, inline="always")
def _draw_lines(state, addr, k, n, q, dense, probe, lines):
    """The n swap lines and the queries among them, in program order, into `lines`: a swap line
    ``x, y = y, x`` as (x, y), a query of variable v as (-1 - v, the address v holds then). q is
    asked after the last line, or (`dense`) after the initialisation and every swap line; `probe`
    (with `dense`) first asks every other variable once. Swaps addr[:k] as the lines do; returns
    the number of lines and whether q's address moved."""
    start = addr[q]
    count = 0
    for line in range(n + 1):
        if line > 0:
            x, y = _draw_swap(state, k)
            addr[x], addr[y] = addr[y], addr[x]
            lines[count, 0], lines[count, 1] = x, y
            count += 1
        if probe and line == 0:
            for v in range(k):
                if v != q:
                    lines[count, 0], lines[count, 1] = -1 - v, addr[v]
                    count += 1
        if dense or line == n:
            lines[count, 0], lines[count, 1] = -1 - q, addr[q]
            count += 1
    return count, addr[q] != start


@numba.njit(cache=True)
def _recall_tokens_batch(
    seed, batch, m_lo, m_hi, n_lo, n_hi, k_lo, k_hi, q_lo, q_hi, dense, probe, balanced, num_addresses, tok
):
    """tok = (bit0, bits, sep, query, var0, addr0); see StateBasedRecall for the layout."""
    bit0, bits_tok, sep, query, var0, addr0 = tok
    max_sup = _max_queries(n_hi, k_hi, dense, probe)
    width = 3 + 2 * m_hi + 2 * k_hi + 3 * n_hi + 2 * max_sup
    flat, starts, seq_lens, positions, answers, counts, meta = flat_buffers(batch, width, max_sup, 5)
    lines = np.empty((n_hi + max_sup, 2), dtype=np.int64)
    taken = np.zeros(num_addresses, dtype=np.bool_)
    labels = np.empty(m_hi, dtype=np.int64)
    bits = np.empty(m_hi, dtype=np.int64)
    bit_at = np.zeros(num_addresses, dtype=np.int64)
    slot = np.empty(26, dtype=np.int64)
    addr = np.empty(26, dtype=np.int64)
    state = np.empty(1, dtype=np.uint64)
    for b in range(batch):
        seed_state(state, seed, b)
        m, n, k, q = _draw_knobs(state, m_lo, m_hi, n_lo, n_hi, k_lo, k_hi, q_lo, q_hi)
        # Floyd's sampling: m distinct addresses out of num_addresses in O(m).
        count = 0
        for j in range(num_addresses - m, num_addresses):
            r = randint(state, 0, j)
            if taken[r]:
                r = j
            taken[r] = True
            labels[count] = r
            count += 1
        used = labels[:m]
        used.sort()
        for j in range(m):
            taken[used[j]] = False
        row = begin_row(flat, starts, seq_lens, b, width)
        row[0] = bits_tok
        t = 1
        _draw_bits(state, bits, m, balanced)
        for j in range(m):
            bit_at[used[j]] = bits[j]
            row[t] = addr0 + used[j]
            row[t + 1] = bit0 + bits[j]
            t += 2
        row[t] = sep
        t += 1
        _draw_pointers(state, slot, k, m)
        for v in range(k):
            addr[v] = used[slot[v]]
            row[t] = var0 + v
            row[t + 1] = addr0 + addr[v]
            t += 2
        row[t] = sep
        t += 1
        n_lines, moved = _draw_lines(state, addr, k, n, q, dense, probe, lines)
        for j in range(n_lines):
            x, y = lines[j, 0], lines[j, 1]
            if x < 0:
                row[t] = query
                row[t + 1] = var0 - 1 - x
                supervise(positions, answers, counts, b, max_sup, t + 1, bit0 + bit_at[y])
                t += 2
            else:
                row[t] = var0 + x
                row[t + 1] = var0 + y
                row[t + 2] = sep
                t += 3
        end_row(seq_lens, meta, b, t, (m, n, k, q, np.int64(moved)))
    return flat, starts, seq_lens, positions, answers, counts, meta


_META = ("m", "num_swaps", "num_vars", "query", "moved")


def _knob_args(ranges: dict[str, tuple[int, int]]) -> tuple[int, ...]:
    return (*ranges["m"], *ranges["num_swaps"], *ranges["num_vars"], *ranges["query"])


_COMMON_KNOBS = {
    "num_swaps": Knob(0, 4096, "swap lines n (state-tracking load)"),
    "num_vars": Knob(2, 26, "pointer variables k, named a, b, c, ...; at most m"),
    "query": Knob(0, 25, "index of the queried variable (a = 0), drawn in [lo, min(hi, num_vars - 1)]"),
}


@register
class StateBasedRecall(Task):
    """State-based recall, token form.

    Tokens: ``0``/``1`` bits (ids 0, 1), ``BITS`` 2, ``SEP`` 3, ``QUERY`` 4, variables ``a..z``
    (ids 5..30), addresses ``@0 .. @(num_addresses-1)`` (ids 31..), then pad. One example::

        BITS @3 1 @17 0 @40 1 … SEP  a @17 b @3 … SEP  [QUERY q]  x y SEP [QUERY q]  …  QUERY q

    line by line: the array as (address, bit) pairs in increasing address order; the pointer
    initialisation ``a = @17, b = @3, …``; each swap line ``x y SEP`` means ``x, y = y, x``; a
    query ``QUERY q`` means ``bits[q]`` and its answer (token 0 or 1) is the target at ``q``. With
    ``supervision="final"`` only the last query is there; with ``"dense"`` one follows the
    initialisation and every swap line; ``"probed"`` adds ``QUERY v`` for every other variable v
    before the first. Length: 2m + 2k + 3n + 5 (+ 2n dense, + 2n + 2k - 2 probed).

    >>> task = StateBasedRecall()
    >>> batch = task.sample(seed=0, batch=2, m=8, num_swaps=3)
    >>> int(batch.loss_mask.sum()), batch.inputs.shape
    (2, (2, 40))
    >>> print(task.decode(batch, 0).splitlines()[-1])  # doctest: +SKIP
    assert bits[c] == 1
    """

    name = "state_based_recall"
    family = "code"
    knobs = {"m": Knob(2, 65536, "bits in the array (recall load); at most num_addresses"), **_COMMON_KNOBS}
    eval_axes = ("num_swaps", "m")
    chance_accuracy = 0.5

    BIT0, BITS, SEP, QUERY, VAR0, ADDR0 = 0, 2, 3, 4, 5, 31

    def __init__(self, supervision: str = "final", num_addresses: int = 4096, bits: str = "random"):
        self.supervision = _check_supervision(supervision)
        self.bits = _check_bits(bits)
        if (
            isinstance(num_addresses, bool)
            or not isinstance(num_addresses, (int, np.integer))
            or not (64 <= num_addresses <= 65536)
        ):
            raise ValueError(
                f"parameter 'num_addresses' must be an int in [64, 65536], got {num_addresses!r}"
            )
        self.num_addresses = int(num_addresses)
        self.knobs = {
            **type(self).knobs,
            "m": Knob(2, self.num_addresses, "bits in the array (recall load); at most num_addresses"),
        }
        self.pad_id = self.ADDR0 + self.num_addresses
        self.vocab_size = self.pad_id + 1
        self.train_range = {"m": (5, 64), "num_swaps": (0, 16), "num_vars": (5, 5), "query": (0, 0)}
        self.eval_range = {
            "m": (5, min(1024, self.num_addresses)),
            "num_swaps": (0, 64),
            "num_vars": (5, 5),
            "query": (0, 0),
        }

    def params(self) -> dict:
        return {"supervision": self.supervision, "num_addresses": self.num_addresses, "bits": self.bits}

    def _sample(self, seed, batch, ranges):
        _check_cross_knobs(ranges)
        tok = (self.BIT0, self.BITS, self.SEP, self.QUERY, self.VAR0, self.ADDR0)
        buffers = _recall_tokens_batch(
            seed,
            batch,
            *_knob_args(ranges),
            self.supervision != "final",
            self.supervision == "probed",
            self.bits == "balanced",
            self.num_addresses,
            tok,
        )
        return code_batch(buffers, self.pad_id, _META, booleans=("moved",))

    def decode(self, batch: Batch, index: int) -> str:
        """The example as the Python program it stands for (array as a dict), answers filled in."""
        row = batch.inputs[index]
        length = int(np.sum(row != self.pad_id))
        tokens = [int(x) for x in row[:length]]
        answers = batch.targets[index]
        var = lambda tok: _VAR_NAMES[tok - self.VAR0]
        end = tokens.index(self.SEP)
        pairs = tokens[1:end]
        entries = ", ".join(f"{a - self.ADDR0}: {bit - self.BIT0}" for a, bit in zip(pairs[::2], pairs[1::2]))
        lines = [f"bits = {{{entries}}}"]
        start = end + 1
        end = tokens.index(self.SEP, start)
        init = tokens[start:end]
        lines.append(
            f"{', '.join(var(v) for v in init[::2])} = {', '.join(str(a - self.ADDR0) for a in init[1::2])}"
        )
        t = end + 1
        while t < length:
            if tokens[t] == self.QUERY:
                lines.append(f"assert bits[{var(tokens[t + 1])}] == {int(answers[t + 1]) - self.BIT0}")
                t += 2
            else:
                x, y = var(tokens[t]), var(tokens[t + 1])
                lines.append(f"{x}, {y} = {y}, {x}")
                t += 3
        return "\n".join(lines)


_CHARS = "\n ,=?[]0123456789abcdefghijklmnopqrstuvwxyz"


def _codes(text: str) -> np.ndarray:
    return codes(text, _CHARS)


_NL, _SPACE, _COMMA, _EQ, _QMARK = (_CHARS.index(c) for c in "\n ,=?")
_CLOSE = _CHARS.index("]")
_DIGIT0, _LETTER_A = _CHARS.index("0"), _CHARS.index("a")
_BITS_OPEN = _codes("bits = [")
_ASSERT_OPEN = _codes("assert bits[")
_ASSERT_CLOSE = _codes("] == ?\n")


@numba.njit(cache=True, inline="always")
def _put_sep(row, t):
    row[t] = _COMMA
    row[t + 1] = _SPACE
    return t + 2


@numba.njit(cache=True, inline="always")
def _put_assignment_equals(row, t):
    row[t] = _SPACE
    row[t + 1] = _EQ
    row[t + 2] = _SPACE
    return t + 3


@numba.njit(cache=True, inline="always")
def _put_assert(row, t, v, positions, answers, counts, b, max_sup, bit):
    """The line ``assert bits[v] == ?`` from row[t], its answer due at the space before ``?``."""
    t = put(row, t, _ASSERT_OPEN)
    row[t] = _LETTER_A + v
    t = put(row, t + 1, _ASSERT_CLOSE)
    supervise(positions, answers, counts, b, max_sup, t - 3, _DIGIT0 + bit)
    return t


@numba.njit(cache=True, inline="always")
def _put_line(row, t, x, y, bits, positions, answers, counts, b, max_sup):
    """One of `_draw_lines`' lines from row[t]: ``assert bits[v] == ?`` or ``x, y = y, x``."""
    if x < 0:
        return _put_assert(row, t, -1 - x, positions, answers, counts, b, max_sup, bits[y])
    row[t] = _LETTER_A + x
    t = _put_sep(row, t + 1)
    row[t] = _LETTER_A + y
    t = _put_assignment_equals(row, t + 1)
    row[t] = _LETTER_A + y
    t = _put_sep(row, t + 1)
    row[t] = _LETTER_A + x
    row[t + 1] = _NL
    return t + 2


@numba.njit(cache=True)
def _recall_text_batch(
    seed, batch, m_lo, m_hi, n_lo, n_hi, k_lo, k_hi, q_lo, q_hi, dense, probe, balanced
):
    digits = 1
    while 10**digits <= m_hi - 1:
        digits += 1
    init_width = 3 * k_hi - 2 + 3 + k_hi * digits + 2 * (k_hi - 1) + 1
    max_sup = _max_queries(n_hi, k_hi, dense, probe)
    width = (3 * m_hi + 8) + init_width + 12 * n_hi + 20 * max_sup
    flat, starts, seq_lens, positions, answers, counts, meta = flat_buffers(batch, width, max_sup, 5)
    lines = np.empty((n_hi + max_sup, 2), dtype=np.int64)
    bits = np.empty(m_hi, dtype=np.int64)
    addr = np.empty(26, dtype=np.int64)
    state = np.empty(1, dtype=np.uint64)
    for b in range(batch):
        seed_state(state, seed, b)
        m, n, k, q = _draw_knobs(state, m_lo, m_hi, n_lo, n_hi, k_lo, k_hi, q_lo, q_hi)
        row = begin_row(flat, starts, seq_lens, b, width)
        t = put(row, 0, _BITS_OPEN)
        _draw_bits(state, bits, m, balanced)
        for j in range(m):
            if j > 0:
                t = _put_sep(row, t)
            row[t] = _DIGIT0 + bits[j]
            t += 1
        row[t] = _CLOSE
        row[t + 1] = _NL
        t += 2
        _draw_pointers(state, addr, k, m)
        for v in range(k):
            if v > 0:
                t = _put_sep(row, t)
            row[t] = _LETTER_A + v
            t += 1
        t = _put_assignment_equals(row, t)
        for v in range(k):
            if v > 0:
                t = _put_sep(row, t)
            t = put_decimal(row, t, addr[v], _DIGIT0)
        row[t] = _NL
        t += 1
        n_lines, moved = _draw_lines(state, addr, k, n, q, dense, probe, lines)
        for j in range(n_lines):
            t = _put_line(row, t, lines[j, 0], lines[j, 1], bits, positions, answers, counts, b, max_sup)
        end_row(seq_lens, meta, b, t, (m, n, k, q, np.int64(moved)))
    return flat, starts, seq_lens, positions, answers, counts, meta


@register
class StateBasedRecallText(Task):
    """State-based recall as Python text, one token per character.

    Characters (ids in this order): newline, space, ``, = ? [ ]``, ``0``-``9``, ``a``-``z``; then
    pad. The example is exactly the program of TASKS.md, every line ending in a newline::

        bits = [0, 1, 1, 0, 1, 0, 0, 1]
        a, b, c, d, e = 3, 6, 0, 5, 2
        a, c = c, a
        d, a = a, d
        assert bits[a] == ?

    The answer character (``0`` or ``1``) is the target at the space before ``?``. With
    ``supervision="dense"`` an ``assert bits[q] == ?`` line (same q) follows the initialisation
    and every swap line; ``"probed"`` puts ``assert bits[v] == ?`` for every other v before the
    first of them.
    """

    name = "state_based_recall_text"
    family = "code"
    knobs = {"m": Knob(2, 4096, "bits in the list (recall load)"), **_COMMON_KNOBS}
    eval_axes = ("num_swaps", "m")
    chance_accuracy = 0.5
    CHARS = _CHARS

    def __init__(self, supervision: str = "final", bits: str = "random"):
        self.supervision = _check_supervision(supervision)
        self.bits = _check_bits(bits)
        self.pad_id = len(_CHARS)
        self.vocab_size = self.pad_id + 1
        self.train_range = {"m": (5, 32), "num_swaps": (0, 16), "num_vars": (5, 5), "query": (0, 0)}
        self.eval_range = {"m": (5, 256), "num_swaps": (0, 64), "num_vars": (5, 5), "query": (0, 0)}

    def params(self) -> dict:
        return {"supervision": self.supervision, "bits": self.bits}

    def _sample(self, seed, batch, ranges):
        _check_cross_knobs(ranges)
        buffers = _recall_text_batch(
            seed,
            batch,
            *_knob_args(ranges),
            self.supervision != "final",
            self.supervision == "probed",
            self.bits == "balanced",
        )
        return code_batch(buffers, self.pad_id, _META, booleans=("moved",))

    def decode(self, batch: Batch, index: int) -> str:
        """The program text with every ``?`` replaced by its supervised answer."""
        row = batch.inputs[index]
        chars = [_CHARS[int(c)] for c in row if c != self.pad_id]
        for t in np.flatnonzero(batch.loss_mask[index]):
            chars[t + 1] = _CHARS[int(batch.targets[index, t])]
        return "".join(chars).rstrip("\n")
