"""The dependency lock: requirements/dev.lock (pip-compile, every package pinned with its hashes, `make lock`)
and the locks cut from it for the deploy job, the embed image and its CPU variant, with the same pins and hashes.

A cut follows pip-compile's own `# via` annotations from the roots it names (pyproject.toml's dependencies and
extras), so it needs neither an index nor an installed environment: `python -m raiox.tools.lock` rewrites the cuts,
and tests/test_lock.py fails when any of them, the installed .venv or the functions' pins drift from dev.lock.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
LOCKS = REPO / "requirements"
DEV_LOCK = LOCKS / "dev.lock"
PINS = LOCKS / "pins.in"
# The CUDA runtime torch loads when a GPU is there: left out of the CPU image (torch imports and runs without it).
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
_ROOT = re.compile(r"^(raiox \(pyproject\.toml\)|-r .*|-c .*)$")


@dataclass(frozen=True)
class Locked:
    name: str  # canonical
    version: str
    text: str  # the entry as pip-compile wrote it: pin, hashes, annotations
    via: frozenset[str]  # canonical names of the packages that need it; "" for a root of the lock

    @property
    def hashes(self) -> list[str]:
        return re.findall(r"--hash=(sha256:[0-9a-f]{64})", self.text)


@dataclass(frozen=True)
class Cut:
    """A lock cut from dev.lock: what `extras` of pyproject.toml need (the core dependencies always), less `drop`."""

    file: str
    purpose: str
    extras: tuple[str, ...] = ()
    drop: re.Pattern[str] | None = None


CUTS = (
    Cut("deploy.lock", "the deploy job: raiox's CLI (db migrate, deploy build/check/smoke), no torch"),
    Cut("embed.lock", "the embed image: raiox with open_clip on torch, its CUDA runtime included", ("embed",)),
    Cut("embed-cpu.lock", "the embed image's CPU variant: the same, without the CUDA runtime", ("embed",), CUDA_ONLY),
)
# Always in a cut: the build backend, so `pip install --no-build-isolation .` fetches nothing unlocked.
ALWAYS = ("setuptools",)


def read_lock(path: Path = DEV_LOCK) -> dict[str, Locked]:
    """Each entry of a pip-compile output, by canonical name."""
    entries: dict[str, Locked] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text(encoding="utf-8"))
    for block in blocks:
        match = _ENTRY.match(block)
        if match is None:
            continue
        lines = [line for line in block.splitlines() if not line.startswith("#")]  # a section note of pip-compile
        via_lines = [line.strip().lstrip("#").strip().removeprefix("via").strip() for line in lines
                     if line.startswith("    #")]
        via = frozenset("" if _ROOT.match(line) else canonicalize_name(line) for line in via_lines if line)
        name = canonicalize_name(match["name"])
        entries[name] = Locked(name, match["version"], "\n".join(lines).rstrip("\n") + "\n", via)
    return entries


def pyproject_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """The core dependencies and those of `extras` (the project's own name inside an extra is followed)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found: list[Requirement] = []
    todo, seen = list(extras), set()
    requirements = [Requirement(text) for text in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                todo.extend(requirement.extras)
            else:
                requirements.append(requirement)
    found.extend(requirements)
    return found


def pinned_inputs() -> list[Requirement]:
    return [Requirement(line) for line in PINS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def cut(lock: dict[str, Locked], spec: Cut) -> list[Locked]:
    """The entries `spec` needs: its roots and everything the lock says they pull in, in the lock's order."""
    needs: dict[str, set[str]] = {}
    for entry in lock.values():
        for parent in entry.via:
            needs.setdefault(parent, set()).add(entry.name)
    roots: set[str] = {canonicalize_name(r.name) for r in pyproject_requirements(spec.extras)}
    roots |= {canonicalize_name(r.name) for r in pinned_inputs() if canonicalize_name(r.name) in roots}
    roots |= set(ALWAYS)
    wanted: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in wanted or (spec.drop is not None and spec.drop.match(name)):
            continue
        if name not in lock:
            raise KeyError(f"{name} is needed by {spec.file} but missing from {DEV_LOCK.name}: run `make lock`")
        wanted.add(name)
        todo.extend(needs.get(name, ()))
    return [entry for entry in lock.values() if entry.name in wanted]


def render(spec: Cut, entries: list[Locked]) -> str:
    header = (f"# {spec.file}: {spec.purpose}.\n# Cut from requirements/dev.lock by `python -m raiox.tools.lock` "
              "(`make lock`): the same pins and hashes. Do not edit.\n")
    return header + "".join(entry.text for entry in entries)


def tidy_dev_lock(path: Path = DEV_LOCK) -> None:
    """Drop the project itself from pip-compile's output (the dev extra names raiox[local,embed]; make installs raiox
    from the working tree) and the temporary output path from its header."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"# WARNING: pip install will require the following package to be hashed\.\n# Consider[^\n]*\n"
                  r"raiox @ [^\n]*\n(    #[^\n]*\n)*", "", text)
    path.write_text(text, encoding="utf-8")


def write_cuts() -> list[Path]:
    tidy_dev_lock()
    lock = read_lock()
    written = []
    for spec in CUTS:
        path = LOCKS / spec.file
        path.write_text(render(spec, cut(lock, spec)), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_cuts():
        print(path.relative_to(REPO), file=sys.stderr)
