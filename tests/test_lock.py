"""The dependency lock is the one source of versions: pyproject.toml's requirements are met by it, every entry has
hashes, the deploy and embed locks are exact cuts of it, the functions pin the same versions, the embed image and
the deploy job install from it, and this .venv holds exactly it. Any drift fails here (and so in CI)."""

from __future__ import annotations

import re
from importlib.metadata import distributions

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from raiox.tools.deploy.manifest import REPO
from raiox.tools.lock import (
    CUDA_ONLY,
    CUTS,
    DEV_LOCK,
    LOCKS,
    cut,
    pinned_inputs,
    pyproject_requirements,
    read_lock,
    render,
)

LOCK = read_lock()


def test_every_requirement_of_the_project_is_met_by_the_lock() -> None:
    wanted = pyproject_requirements(("dev", "local", "embed")) + pinned_inputs()
    assert len(wanted) > 20
    for requirement in wanted:
        entry = LOCK.get(canonicalize_name(requirement.name))
        assert entry is not None, f"{requirement} is not in {DEV_LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(entry.version, prereleases=True), \
            f"{DEV_LOCK.name} pins {entry.name}=={entry.version}, pyproject wants {requirement}: run `make lock`"
    assert LOCK["torch"].version == "2.14.1" and LOCK["torchvision"].version == "0.29.1"


def test_every_entry_carries_hashes_and_nothing_is_unpinned() -> None:
    text = DEV_LOCK.read_text()
    for entry in LOCK.values():
        assert entry.hashes, entry.name
    assert "raiox @" not in text and not re.search(r"^-e ", text, re.M)
    requirement_lines = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert all("==" in line for line in requirement_lines), requirement_lines


@pytest.mark.parametrize("spec", CUTS, ids=lambda spec: spec.file)
def test_each_cut_is_what_the_lock_gives(spec) -> None:  # type: ignore[no-untyped-def]
    """`make lock` rewrites them; a hand edit or a lock changed without them fails."""
    assert (LOCKS / spec.file).read_text() == render(spec, cut(LOCK, spec)), f"{spec.file}: run `make lock`"


def test_the_cuts_hold_what_each_place_needs() -> None:
    names = {spec.file: {e.name for e in cut(LOCK, spec)} for spec in CUTS}
    assert "torch" not in names["deploy.lock"] and "pytest" not in names["deploy.lock"]
    assert {"psycopg", "boto3", "click", "setuptools"} <= names["deploy.lock"]
    assert {"torch", "open-clip-torch", "functions-framework", "nvidia-cudnn-cu13"} <= names["embed.lock"]
    assert "torch" in names["embed-cpu.lock"] and not [n for n in names["embed-cpu.lock"] if CUDA_ONLY.match(n)]
    assert not names["embed.lock"] & {"pytest", "moto", "playwright", "pgserver"}


def test_the_functions_pin_the_locked_versions() -> None:
    for path in (REPO / "infra" / "functions").glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                requirement = Requirement(line)
                entry = LOCK.get(canonicalize_name(requirement.name))
                assert entry is not None and requirement.specifier.contains(entry.version), (path.name, line)


def test_the_image_the_deploy_job_and_make_install_from_the_locks() -> None:
    dockerfile = (REPO / "infra" / "embed" / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "ARG LOCK=requirements/embed.lock" in dockerfile
    assert "--build-arg LOCK=requirements/embed-cpu.lock" in dockerfile  # the CPU variant, documented there
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in makefile and "LOCK := requirements/dev.lock" in makefile
    assert "torch==" not in makefile  # versions live in the lock only
    deploy = (REPO / ".github" / "workflows" / "deploy.yml").read_text()
    assert "requirements/deploy.lock" in deploy and "make env" not in deploy


def test_this_environment_is_the_lock() -> None:
    """`make env` installs dev.lock; a package added, removed or upgraded by hand (or a lock changed without
    reinstalling) shows here. Fix: `make env` (or `make clean env`)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    locked = {name: entry.version for name, entry in LOCK.items()}
    different = {name: (installed.get(name), version) for name, version in locked.items()
                 if installed.get(name) != version}
    extra = set(installed) - set(locked) - {"raiox", "pip"}
    assert not different, f"installed vs locked: {different}"
    assert not extra, f"installed but not locked: {sorted(extra)}"
