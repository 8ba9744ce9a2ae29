"""Code evaluation tasks: state-based recall (token and text forms), variable tracking, straight-line
programs and boolean formulas. Importing this module registers them all in TASKS."""

from synthetic_tasks.code_formula import BooleanFormula
from synthetic_tasks.code_programs import StraightLinePrograms
from synthetic_tasks.code_recall import StateBasedRecall, StateBasedRecallText
from synthetic_tasks.code_tracking import VariableTracking

__all__ = [
    "BooleanFormula",
    "StateBasedRecall",
    "StateBasedRecallText",
    "StraightLinePrograms",
    "VariableTracking",
]
