"""project.yml: its functions, the placeholders each one takes from .env, and the text the deployer will read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[4]
MANIFEST = REPO / "project.yml"
# What the deployer substitutes anywhere in the raw text (functions-deployer src/util.ts, findNextSymbol).
SUBSTITUTION = re.compile(r"\$[{(]")
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
# The only line a placeholder may sit on: `NAME: "${NAME}"`, and `  # optional` when an empty value may deploy.
_SETTING_LINE = re.compile(r'^(?P<indent>\s+)(?P<key>[A-Z][A-Z0-9_]*): "\$\{(?P<name>[A-Z][A-Z0-9_]*)\}"'
                           r"(?P<optional>\s+# optional)?\s*$")


# The requirement groups each function imports beyond the shared infra/functions/requirements.txt, one file each
# (infra/functions/requirements-<group>.txt). tests/tools/test_function_runtime.py follows every import of each
# function's code and fails when a package it can reach is in none of its files (or in NEVER_BUNDLED).
FUNCTION_GROUPS: dict[str, tuple[str, ...]] = {
    "webhook": ("imaging", "storage"),
    "approve": ("storage",),
    "notify": ("imaging",),
}


class ManifestError(ValueError):
    """project.yml would not survive the deployer's substitution."""


@dataclass(frozen=True)
class DeployedFunction:
    package: str
    name: str
    spec: dict[str, Any]

    @property
    def source(self) -> Path:
        return REPO / "functions" / self.name

    @property
    def requirements(self) -> list[Path]:
        """The shared pins, then those of each of the function's groups (FUNCTION_GROUPS)."""
        folder = REPO / "infra" / "functions"
        return [folder / "requirements.txt",
                *(folder / f"requirements-{group}.txt" for group in FUNCTION_GROUPS.get(self.name, ()))]


@dataclass(frozen=True)
class Placeholder:
    name: str
    line: int
    optional: bool


def read_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def manifest_functions(manifest: dict[str, Any]) -> list[DeployedFunction]:
    return [DeployedFunction(package["name"], function["name"], function)
            for package in manifest.get("packages", [])
            for function in package.get("functions", package.get("actions", []))]


def placeholders(manifest: dict[str, Any]) -> set[str]:
    """Every `${VAR}` the manifest's values expect from .env."""
    return set(PLACEHOLDER.findall(json.dumps(manifest)))


def function_settings(manifest: dict[str, Any], function: DeployedFunction) -> dict[str, str]:
    """The environment one function runs with: the project's, the package's, then its own (later wins)."""
    package = next(p for p in manifest["packages"] if p["name"] == function.package)
    return {**manifest.get("environment", {}), **package.get("environment", {}),
            **function.spec.get("environment", {})}


def scan(text: str) -> list[Placeholder]:
    """Every placeholder line of the manifest's text. ManifestError for a substitution the deployer would make
    anywhere else (a comment, a key, a value with more around it), or a key that differs from its variable."""
    found: list[Placeholder] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not SUBSTITUTION.search(line):
            continue
        match = _SETTING_LINE.match(line)
        if match is None:
            raise ManifestError(f"project.yml line {number}: the deployer substitutes every dollar-brace or "
                                f"dollar-parenthesis, comments included; only `NAME: \"${{NAME}}\"` lines may hold "
                                f"one: {line.strip()}")
        if match["key"] != match["name"]:
            raise ManifestError(f"project.yml line {number}: {match['key']} takes {match['name']}; use its own name")
        found.append(Placeholder(match["name"], number, bool(match["optional"])))
    return found


def optional_names(text: str) -> set[str]:
    """Names every line of which is marked optional (a name required anywhere is required)."""
    lines = scan(text)
    return {p.name for p in lines} - {p.name for p in lines if not p.optional}


def without_empty_optional(text: str, value_of: dict[str, str]) -> str:
    """The manifest without the `# optional` lines whose value the deployer would find empty: an empty value
    stops a deploy (functions-deployer src/util.ts, substituteFromEnvAndFiles), a missing line keeps the default."""
    optional_lines = {p.line for p in scan(text) if p.optional and not value_of.get(p.name)}
    return "".join(line for number, line in enumerate(text.splitlines(keepends=True), 1)
                   if number not in optional_lines)
