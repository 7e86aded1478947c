"""Deployment artefacts: the folder `doctl serverless deploy` wants, laid out from functions/ and lib/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")
# Never inside a function: the tooling package as a whole, and the encoder's weights (torch runs only in embed).
_LEFT_OUT = ("tools", "model_weights", "__pycache__")
FUNCTION_LIMIT_BYTES = 48 * 1024 * 1024


@dataclass(frozen=True)
class DeployedFunction:
    package: str
    name: str
    spec: dict[str, Any]

    @property
    def source(self) -> Path:
        return REPO / "functions" / self.name


def read_manifest(path: Path = REPO / "project.yml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def manifest_functions(manifest: dict[str, Any]) -> list[DeployedFunction]:
    return [DeployedFunction(package["name"], function["name"], function)
            for package in manifest.get("packages", [])
            for function in package.get("functions", package.get("actions", []))]


def placeholders(manifest: dict[str, Any]) -> set[str]:
    """Every `${VAR}` the manifest's values expect from .env."""
    return set(PLACEHOLDER.findall(json.dumps(manifest)))


def build_do_project(out: Path) -> list[Path]:
    """Write out/project.yml and out/packages/<pkg>/<fn>/ (entry file, the raiox library, requirements);
    returns the function folders. Everything is copied from the tree, so the build is reproducible."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(REPO / "project.yml", out / "project.yml")
    folders = []
    for function in manifest_functions(read_manifest()):
        folder = out / "packages" / function.package / function.name
        folder.mkdir(parents=True)
        shutil.copy2(function.source / "__main__.py", folder / "__main__.py")
        shutil.copytree(REPO / "lib" / "raiox", folder / "raiox", symlinks=False,
                        ignore=shutil.ignore_patterns(*_LEFT_OUT))
        shutil.copy2(REPO / "infra" / "functions" / "requirements.txt", folder / "requirements.txt")
        folders.append(folder)
    return folders


def install_requirements(folder: Path) -> None:
    """What DigitalOcean's remote build does, for measuring: Linux CPython 3.11 wheels into virtualenv/."""
    target = folder / "virtualenv" / "lib" / "python3.11" / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
         "--python-version", "3.11", "--implementation", "cp", "--target", str(target),
         "-r", str(folder / "requirements.txt")],
        check=True,
    )


def upload_size(folder: Path) -> int:
    """Bytes of the folder zipped (deflate) and base64-encoded, as OpenWhisk stores an action's code:
    the conservative reading of the 48 MB limit."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder))
    size = archive.stat().st_size
    archive.unlink()
    return (size + 2) // 3 * 4
