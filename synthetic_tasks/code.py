"""Code evaluation tasks: state-based recall (token and text forms), variable tracking, straight-line
programs and boolean formulas. Importing this module registers them all in TASKS."""

from synthetic_tasks.code_recall import StateBasedRecall, StateBasedRecallText

__all__ = ["StateBasedRecall", "StateBasedRecallText"]
