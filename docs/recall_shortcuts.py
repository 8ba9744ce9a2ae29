"""The shortcut tables of docs/recall-protocol.md §2: what state-based recall scores without tracking.

    .venv/bin/python docs/recall_shortcuts.py

Part 1 is exact (sums over the binomial count of ones). Part 2 scores, on generated batches, four
predictors that read bits but do not track the permutation; each is the Bayes-optimal guess given
what it knows, and ties count as half right.
"""

from __future__ import annotations

import sys
from math import comb, log
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_tasks import make_task  # noqa: E402

PREDICTORS = ("initial-address bit", "no-tracking Bayes", "touched? Bayes", "one-hop tracking")


def count_shortcut(m_lo: int, m_hi: int) -> tuple[float, float]:
    """Accuracy and cross-entropy of P(bit = 1) = ones / m, for m uniform in [m_lo, m_hi]."""
    accs, losses = [], []
    for m in range(m_lo, m_hi + 1):
        acc = loss = 0.0
        for ones in range(m + 1):
            weight, p = comb(m, ones) / 2**m, ones / m
            acc += weight * max(p, 1 - p)
            if 0 < ones < m:
                loss -= weight * (p * log(p) + (1 - p) * log(1 - p))
        accs.append(acc)
        losses.append(loss)
    return float(np.mean(accs)), float(np.mean(losses))


def _program(task, tokens):
    """Bits at the k initial addresses and the events (swap x y / query position v) of one example."""
    end = tokens.index(task.SEP)
    pairs = tokens[1:end]
    bits = {a: b - task.BIT0 for a, b in zip(pairs[::2], pairs[1::2])}
    start, end = end + 1, tokens.index(task.SEP, end + 1)
    init = tokens[start:end]
    pointer_bits = np.array([bits[a] for a in init[1::2]])
    events, t = [], end + 1
    while t < len(tokens):
        if tokens[t] == task.QUERY:
            events.append(("query", tokens[t + 1] - task.VAR0))
            t += 2
        else:
            events.append(("swap", tokens[t] - task.VAR0, tokens[t + 1] - task.VAR0))
            t += 3
    return pointer_bits, events


def _scores(pointer_bits, events):
    """Per query: (truth, P(1) under each predictor). Slots are the k initial addresses."""
    k = len(pointer_bits)
    slot = list(range(k))  # slot[v]: the initial address v holds now
    touched = [False] * k
    resolved = [True] * k  # a two-hop reader knows slot[v] exactly
    swaps, rows = 0, []
    for event in events:
        if event[0] == "swap":
            _, x, y = event
            resolved[x], resolved[y] = not touched[y], not touched[x]
            slot[x], slot[y] = slot[y], slot[x]
            touched[x] = touched[y] = True
            swaps += 1
            continue
        q = event[1]
        # q's slot walks over the k slots: it stays with probability 1 - 2/k per swap.
        p_home = 1 / k + (1 - 1 / k) * (1 - 2 / (k - 1)) ** swaps
        p_stay = (1 - 2 / k) ** swaps

        def bayes(p, q=q):
            weights = np.full(k, (1 - p) / (k - 1))
            weights[q] = p
            return float(weights @ pointer_bits)

        initial = float(pointer_bits[q])
        no_tracking = bayes(p_home)
        touch = initial if not touched[q] else bayes((p_home - p_stay) / (1 - p_stay))
        one_hop = float(pointer_bits[slot[q]]) if resolved[q] else touch
        rows.append((pointer_bits[slot[q]], initial, no_tracking, touch, one_hop))
    return rows


def swap_shortcuts(supervision: str, num_vars: int, num_swaps, moved_only: bool, n: int = 2000) -> list:
    """Token accuracy of each predictor over the supervised positions of n generated examples."""
    task = make_task("state_based_recall", supervision=supervision, num_addresses=64)
    batch = task.sample(11, n, m=(5, 8), num_swaps=num_swaps, num_vars=num_vars, query=0)
    rows = []
    for i in range(n):
        if moved_only and not batch.meta["moved"][i]:
            continue
        row = batch.inputs[i]
        rows += _scores(*_program(task, [int(x) for x in row[row != task.pad_id]]))
    rows = np.array(rows)
    truth, guesses = rows[:, :1], rows[:, 1:]
    return np.mean(np.where(guesses == 0.5, 0.5, (guesses > 0.5) == truth), axis=0).tolist()


def main() -> None:
    print("| m (uniform) | count-shortcut accuracy | its loss |\n|---|---|---|")
    for lo, hi in [(4, 8), (5, 8), (8, 16), (5, 32), (8, 64), (5, 512)]:
        acc, loss = count_shortcut(lo, hi)
        print(f"| {lo}–{hi} | {acc:.3f} | {loss:.3f} |")
    for supervision, moved in [("dense", False), ("probed", True)]:
        for k in (5, 3):
            slice_ = "moved examples" if moved else "all examples"
            print(f"\n{supervision}, k = {k}, {slice_}: | n | " + " | ".join(PREDICTORS) + " |")
            for num_swaps in [(1, 16), 1, 2, 4, 8, 16, 32, 64]:
                scores = swap_shortcuts(supervision, k, num_swaps, moved)
                label = "-".join(map(str, num_swaps)) if isinstance(num_swaps, tuple) else num_swaps
                print(f"| {label} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
