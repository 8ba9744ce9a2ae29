"""Placeholder: filled by its owner."""

ORACLES: dict = {}
