"""An env file read the way DigitalOcean's deployer reads it, and which value each placeholder will get."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# dotenv 16 (lib/main.js, LINE), which the deployer parses --env files with (functions-deployer src/util.ts,
# getPropsFromFile). Unlike python-dotenv, an unquoted value ends at the first "#" wherever it stands.
_DOTENV_LINE = re.compile(
    r"(?:^|^)\s*(?:export\s+)?([\w.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*\"(?:\\\"|[^\"])*\"|"
    r"\s*`(?:\\`|[^`])*`|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)",
    re.M,
)
_SURROUNDING_QUOTES = re.compile(r"^(['\"`])([\s\S]*)\1$", re.M)
# Pasted into a double-quoted YAML scalar, these end it early or start an escape sequence.
_BREAKS_YAML = ('"', "\\")


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE pairs exactly as dotenv 16's `parse` returns them."""
    values: dict[str, str] = {}
    for match in _DOTENV_LINE.finditer(re.sub(r"\r\n?", "\n", text)):
        value = (match.group(2) or "").strip()
        quote = value[:1]
        value = _SURROUNDING_QUOTES.sub(r"\2", value)
        if quote == '"':
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        values[match.group(1)] = value
    return values


def read_env_file(path: Path) -> dict[str, str]:
    return parse_dotenv(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Resolved:
    """What the deployer will paste for each name (`process.env[NAME] || props[NAME]`, functions-deployer
    src/util.ts substituteFromEnvAndFiles): a non-empty shell variable wins over the env file, and an empty
    value counts as unresolved."""

    values: dict[str, str]
    from_shell: frozenset[str]  # names whose value comes from the shell
    overridden: frozenset[str]  # of those, names the env file sets to something else

    def get(self, name: str) -> str:
        return self.values.get(name, "")


def resolve(names: set[str], env_file: Mapping[str, str], shell: Mapping[str, str] | None = None) -> Resolved:
    shell = os.environ if shell is None else shell
    values: dict[str, str] = {}
    from_shell: set[str] = set()
    overridden: set[str] = set()
    for name in sorted(names):
        if shell.get(name):
            values[name] = shell[name]
            from_shell.add(name)
            if env_file.get(name, "") != shell[name]:
                overridden.add(name)
        else:
            values[name] = env_file.get(name, "")
    return Resolved(values, frozenset(from_shell), frozenset(overridden))


def breaks_yaml(value: str) -> bool:
    """Whether a value pasted into `"${NAME}"` would make the manifest invalid YAML or change its meaning."""
    return any(character in value for character in _BREAKS_YAML)
