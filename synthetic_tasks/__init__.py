"""Task generators (numba) with their contract and the TASKS registry."""

from synthetic_tasks.base import TASKS, Batch, Knob, Task, derive_seed, make_task, register

# Importing a family module registers its tasks in TASKS.
from synthetic_tasks import code, context_free, groups, recall, regular  # noqa: E402,F401  isort: skip

__all__ = ["TASKS", "Batch", "Knob", "Task", "derive_seed", "make_task", "register"]
