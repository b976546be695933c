"""Reading YAML safely (duplicate keys refused, aliases bounded, `2e-4` a number) and loading config.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .models import ProjectConfig
from .types import ConfigError
from .validation import validated


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `2e-4` (no dot) as a string; here it is the number everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """YAML lets a later key silently replace an earlier one (`lr: 2e-4` ... `lr: 9.0`); a config must not."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice in one mapping (lines {seen[key]} and {key_node.start_mark.line + 1}): keep one")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


MAX_CONFIG_BYTES = 4 << 20  # config.yaml is a few kB
MAX_YAML_VALUES = 200_000  # values once aliases (*name) are expanded: the paper's config has about 1,000


def read_yaml(text: str) -> Any:
    """Parse YAML with the project's loader, refusing documents whose aliases expand beyond MAX_YAML_VALUES
    (a "billion laughs" config would otherwise take all memory before any key is checked)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config has {len(text):,} characters; a config holds at most {MAX_CONFIG_BYTES:,}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(f"the config's aliases (*name) expand it to {size:,} values; a config holds at most {MAX_YAML_VALUES:,}")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values `node` becomes once every alias is expanded (aliases share node objects: memoised)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a recursive alias counts once while its size is computed
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, seen) + _expanded_size(value, seen) for key, value in node.value)
    else:
        size = 1
    seen[id(node)] = size
    return size


def read_yaml_mapping(path: str | Path, what: str, max_bytes: int, not_a_mapping: str) -> dict[str, Any]:
    """A small YAML file whose top level is a mapping (a config, a plan), or ConfigError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    if path.stat().st_size > max_bytes:
        raise ConfigError(f"{path} has {path.stat().st_size:,} bytes; a {what} holds at most {max_bytes:,}")
    try:
        raw = read_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {not_a_mapping}")
    return raw


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate `config.yaml`; raise ConfigError naming the first bad key."""
    return parse_config(read_yaml_mapping(path, "config", MAX_CONFIG_BYTES, "the top level must be a mapping"))


def parse_config(raw: dict[str, Any]) -> ProjectConfig:
    return validated(ProjectConfig, raw)
