"""Slow, obviously-correct pure-Python oracles, one per task, written from docs/TASKS.md alone.

They never import the generators. Each family module exposes ``ORACLES``: task name ->
``oracle(task, tokens) -> dict[int, int]``, which reads one example's input tokens (padding
stripped) and returns the expected target at every supervised position. Tests and the generator
benchmark use them; training never does.
"""

from synthetic_tasks.oracles import code, context_free, groups, recall, regular

ORACLES = {**regular.ORACLES, **groups.ORACLES, **context_free.ORACLES, **recall.ORACLES, **code.ORACLES}

__all__ = ["ORACLES"]
