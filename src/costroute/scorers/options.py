"""Reading a scorer's options from the task file's [scorer] table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from costroute.errors import UsageError


class Options:
    """One scorer kind's options, read with messages that name the fix."""

    def __init__(self, kind: str, values: Mapping[str, Any]) -> None:
        self.kind = kind
        self._values = dict(values)

    def allow(self, *names: str) -> None:
        """Reject any option the kind does not know, so typos do not pass silently."""
        unknown = sorted(set(self._values) - set(names))
        if not unknown:
            return

        known = ", ".join(names) if names else "none"
        raise self.error(
            f"has no option {unknown[0]!r}; check the spelling (options: {known})"
        )

    def raw(self, name: str) -> Any:
        """An option as written, for kinds that check its shape themselves."""
        return self._values.get(name)

    def error(self, message: str) -> UsageError:
        return UsageError(f"[scorer] kind = {self.kind!r} {message}")

    def required_string(self, name: str, example: str, purpose: str) -> str:
        if name not in self._values:
            raise self.error(f"needs {name} = {example}; add {purpose}")

        return self.string_or(name, example, "")

    def string(self, name: str, example: str) -> str | None:
        value = self._values.get(name)
        if value is None or (isinstance(value, str) and value.strip()):
            return value

        raise self.error(
            f"needs {name} to be a non-empty string, e.g. {name} = {example}"
        )

    def string_or(self, name: str, example: str, default: str) -> str:
        value = self.string(name, example)
        return default if value is None else value

    def string_list(self, name: str, example: str) -> list[str] | None:
        value = self._values.get(name)
        if value is None:
            return None

        if not isinstance(value, list) or not value:
            raise self.error(
                f"needs {name} to be a non-empty list, e.g. {name} = {example}"
            )
        if not all(isinstance(entry, str) and entry.strip() for entry in value):
            raise self.error(f"needs every entry of {name} to be a non-empty string")
        return list(value)

    def string_map(self, name: str, example: str) -> dict[str, str]:
        value = self._values.get(name, {})
        is_map = isinstance(value, dict) and all(
            isinstance(key, str) and isinstance(entry, str)
            for key, entry in value.items()
        )
        if not is_map:
            raise self.error(f"needs {name} to be a table of strings, e.g. {example}")
        return dict(value)

    def number(self, name: str, default: float | None = None) -> float | None:
        """A non-negative finite number; TOML integers are accepted too."""
        value = self._values.get(name, default)
        if value is None:
            return None

        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or value < 0:
            raise self.error(f"needs {name} to be a number of 0 or more, got {value!r}")
        return float(value)

    def count(self, name: str, default: int) -> int:
        value = self.number(name, default)
        if value is None or not value.is_integer():
            raise self.error(f"needs {name} to be a whole number, got {value!r}")
        return int(value)

    def positive(self, name: str, default: float) -> float:
        value = self.number(name, default)
        if value is None or value <= 0:
            raise self.error(f"needs {name} to be more than 0, got {value!r}")
        return value
