"""Prompt templates: `{{field}}` placeholders filled from an item's fields."""

from __future__ import annotations

import json
import re

from costroute.dataset import Item
from costroute.errors import UsageError
from costroute.task import PromptConfig

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")


def placeholders(template: str) -> list[str]:
    return PLACEHOLDER.findall(template)


def check_fields(prompt: PromptConfig, item: Item, source: str) -> None:
    """Raise if the templates name a field this item does not have."""
    for template in (prompt.system or "", prompt.user):
        for name in placeholders(template):
            if name not in item.fields:
                raise UsageError(
                    f"{source} line {item.line}: the prompt uses {{{{{name}}}}} but "
                    f"the row has no field {name!r}; add it or fix the template"
                )


def render(prompt: PromptConfig, item: Item) -> list[dict[str, str]]:
    """The chat messages for one item."""
    messages: list[dict[str, str]] = []
    if prompt.system:
        messages.append({"role": "system", "content": _fill(prompt.system, item)})
    messages.append({"role": "user", "content": _fill(prompt.user, item)})
    return messages


def _fill(template: str, item: Item) -> str:
    return PLACEHOLDER.sub(lambda match: _text(item.fields[match.group(1)]), template)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
