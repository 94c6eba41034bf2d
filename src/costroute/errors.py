"""Errors that reach the user as one `Error: …` line instead of a traceback."""

from __future__ import annotations


class CostrouteError(Exception):
    """An expected failure whose message says what went wrong and how to fix it."""

    exit_code = 1


class UsageError(CostrouteError):
    """Bad input from the user: a task file, a dataset row, a flag."""

    exit_code = 2


class BudgetExceeded(CostrouteError):
    """The run stopped because the next call could pass `--max-cost`."""

    exit_code = 1
