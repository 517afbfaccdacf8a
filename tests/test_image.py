"""The image's contract outside Docker (no engine on CI): the lock files the image and CI install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins(name: str) -> dict[str, str]:
    """name -> version for each `name==version` line of a lock file."""
    text = (ROOT / name).read_text(encoding="utf-8")
    return {canonicalize_name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, re.M)}


def test_the_locks_pin_every_dependency_within_pyproject_ranges_and_agree_with_each_other() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(runtime[name], prereleases=True), (name, runtime[name])
    for requirement in map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"]):
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(test[name], prereleases=True), (name, test[name])
    assert {name: test[name] for name in runtime} == runtime  # CI tests the versions the image runs
    for name in ("requirements.lock", "requirements-test.lock"):
        assert "uv pip compile pyproject.toml" in (ROOT / name).read_text(encoding="utf-8").split("\n", 3)[1], name
