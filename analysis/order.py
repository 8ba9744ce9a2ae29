"""One display order for tasks and architectures, shared by tables, figures and the verdict."""

from __future__ import annotations


def is_hybrid(pattern: str) -> bool:
    """A pattern mixing at least two mixer letters (`GGGA`, `GA`), as opposed to a pure one (`GGGG`)."""
    return len(set(pattern)) >= 2


def task_order(tasks) -> list[str]:
    """Alphabetical, ignoring case (S5 between parity and state_based_recall, not before them)."""
    return sorted(set(tasks), key=lambda task: (task.casefold(), task))


def arch_order(archs) -> list[str]:
    """Pure mixers first (A, then recurrent), then hybrids by pattern length and name.

    Labels are patterns with an optional suffix (`G-noneg`); the part before `-` is the pattern.
    """

    def key(arch: str):
        pattern = arch.split("-")[0]
        return (is_hybrid(pattern), len(pattern), arch)

    return sorted(set(archs), key=key)
