"""build/do: the folder `doctl serverless deploy` reads, laid out from project.yml, functions/, lib/ and admin/."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from raiox.tools.deploy.manifest import (
    MANIFEST,
    REPO,
    DeployedFunction,
    manifest_functions,
    read_manifest,
    scan,
    without_empty_optional,
)

# Never inside a function: the tooling package as a whole, and the shape encoder's weights (torch runs only in
# embed).
_LEFT_OUT = ("tools", "weights", "__pycache__")
BUILD_SCRIPT = REPO / "infra" / "functions" / "build.sh"
ADMIN_PAGE = REPO / "admin"
# The function that serves the admin page (raiox.review.admin_page) carries its files.
ADMIN_PAGE_FUNCTION = "approve"
FUNCTION_LIMIT_BYTES = 48 * 1024 * 1024
# Packages the python:3.11 runtime provides that a build may leave out: none. DigitalOcean documents none (its
# Python runtime page, docs.digitalocean.com/products/functions/reference/runtimes/python/, lists no package);
# OpenWhisk's python:3.11 runtime (apache/openwhisk-runtime-python, core/python311Action/requirements.txt) ships
# requests and not boto3, but DigitalOcean does not promise to follow it. So every function bundles all it imports.
RUNTIME_PACKAGES: tuple[str, ...] = ()
# What the deployer leaves out of a built folder's zip (functions-deployer src/finder-builder.ts, getIgnores).
_NOT_ZIPPED = {"build.sh", "build.cmd", ".ignore", "__deployer__.zip"}


def build_do_project(out: Path, values: Mapping[str, str] | None = None) -> list[Path]:
    """Write out/project.yml and out/packages/<pkg>/<fn>/ (entry file, the raiox library, requirements.txt and an
    executable build.sh that installs them); returns the function folders. With `values` (what the deployer
    will paste for each name, see envfile.resolve), optional lines whose value is empty are left out of
    out/project.yml. Values are never written: the deployer pastes them itself."""
    text = MANIFEST.read_text(encoding="utf-8")
    scan(text)  # refuses a manifest the deployer would misread
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "project.yml").write_text(text if values is None else without_empty_optional(text, dict(values)),
                                     encoding="utf-8")
    folders = []
    for function in manifest_functions(read_manifest()):
        folder = out / "packages" / function.package / function.name
        folder.mkdir(parents=True)
        shutil.copy2(function.source / "__main__.py", folder / "__main__.py")
        shutil.copytree(REPO / "lib" / "raiox", folder / "raiox", symlinks=False,
                        ignore=shutil.ignore_patterns(*_LEFT_OUT))
        if function.name == ADMIN_PAGE_FUNCTION:
            shutil.copytree(ADMIN_PAGE, folder / "admin")
        (folder / "requirements.txt").write_text(requirements_of(function), encoding="utf-8")
        shutil.copy2(BUILD_SCRIPT, folder / "build.sh")
        mode = (folder / "build.sh").stat().st_mode
        (folder / "build.sh").chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)  # the deployer execs it
        folders.append(folder)
    return folders


def requirements_of(function: DeployedFunction) -> str:
    return "".join(f"# from {path.relative_to(REPO)}\n{path.read_text(encoding='utf-8')}"
                   for path in function.requirements)


def run_build_script(folder: Path) -> None:
    """What the deployer does before zipping the folder: run its build.sh there (with this interpreter's pip)."""
    env = {**os.environ, "RAIOX_BUILD_PYTHON": sys.executable}
    subprocess.run(["./build.sh"], cwd=folder, env=env, check=True)


def upload_size(folder: Path) -> int:
    """Bytes of the folder zipped as the deployer zips a built folder, base64-encoded as the upload carries it:
    the reading of the 48 MB limit that counts. Deflate level 1, because the deployer's zlib (Node's) packs these
    wheels about 10% worse than CPython's at its default level; level 1 lands just above what it uploads
    (test_deployer.py compares the two)."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and str(relative) not in _NOT_ZIPPED:
                bundle.write(path, relative)
    size = archive.stat().st_size
    archive.unlink()
    return (size + 2) // 3 * 4
