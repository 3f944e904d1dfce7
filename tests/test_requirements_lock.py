"""requirements.lock is what Azure installs and what the tests run: it must satisfy the ranges
of requirements.txt on every supported Python, and this test environment must hold exactly its
versions. After changing a range, run scripts/lock."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = ("3.11", "3.12", "3.13")


def requirements(path: Path) -> list[Requirement]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split(" #")[0]) for line in lines if line and line[0].isalnum()]


def environment(python: str) -> dict[str, str]:
    env = {name: str(value) for name, value in default_environment().items()}
    env.update(python_version=python, python_full_version=f"{python}.0")
    return env


def pins(python: str) -> dict[str, Version]:
    """The lock's exact versions that apply on this Python."""
    found: dict[str, Version] = {}
    for requirement in requirements(ROOT / "requirements.lock"):
        if requirement.marker is None or requirement.marker.evaluate(environment(python)):
            [specifier] = requirement.specifier
            assert specifier.operator == "==", f"{requirement} is not an exact pin"
            name = canonicalize_name(requirement.name)
            assert name not in found, f"{name} is pinned twice for Python {python}"
            found[name] = Version(specifier.version)
    return found


@pytest.mark.parametrize("python", SUPPORTED)
def test_the_lock_satisfies_every_range_on_each_supported_python(python: str) -> None:
    locked = pins(python)
    for requirement in requirements(ROOT / "requirements.txt"):
        if requirement.marker is not None and not requirement.marker.evaluate(environment(python)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} has a range but no pin for Python {python}: scripts/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}=={locked[name]} is outside {requirement.specifier} on Python {python}: "
            "run scripts/lock"
        )


def test_python_313_runs_the_functions_runtime_from_the_lock() -> None:
    locked = pins("3.13")
    assert "azure-functions-runtime" in locked
    assert locked["azure-functions"].major == 2
    assert pins("3.11")["azure-functions"].major == 1


def test_this_environment_runs_the_locked_versions() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    wrong = {
        name: (str(version), metadata.version(name))
        for name, version in pins(python).items()
        if Version(metadata.version(name)) != version
    }
    assert not wrong, f"installed versions differ from requirements.lock: {wrong}"
