"""YAML documents read strictly: PyYAML's safe loader, refusing duplicate keys, errors in one line.

YAML would silently resolve a duplicate key to its last value, which hides typos in hand-written
config such as an appspec; this loader refuses them instead. Integers keep the text they were
written as (:class:`LiteralInt`), because YAML 1.1 reads ``0644`` as the octal number 420 and a
file mode must mean the digits the author wrote. PyYAML's exceptions end here, as YamlError.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from common.errors import ShoalError


class YamlError(ShoalError):
    """The text is not one well-formed YAML document; the message gives line and column."""


class LiteralInt(int):
    """An int from YAML that keeps its source text."""

    text: str


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys and remembers how integers were written."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    result = LiteralInt(loader.construct_yaml_int(node))
    result.text = str(node.value)
    return result


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str) -> object:
    """The one document in ``text``; YamlError ("line L, column C: invalid YAML: ...") if not."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
        problem = ", ".join(str(p) for p in parts if p) or str(exc)
        problem = " ".join(problem.split())
        raise YamlError(f"{where}invalid YAML: {problem}") from exc
