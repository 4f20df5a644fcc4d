"""What can be checked of the image and compose files without a container engine: layer
order, pins, health checks, start order, and the constraints the image installs under."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy import constraints

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"
CONSTRAINTS = REPO / "deploy" / "constraints.txt"
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*$")
"""An image reference by exact version (``name:1.2.3`` with an optional ``-variant``)."""


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and name == canonicalize_name(name), f"not a name==version: {line!r}"
            assert name not in found, f"pinned twice: {name}"
            found[name] = version
    return found


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = instructions()
    copies = [(i, args) for i, (op, args) in enumerate(steps) if op == "COPY"]
    runs = [(i, args) for i, (op, args) in enumerate(steps) if op == "RUN"]
    first_source = min(i for i, args in copies if re.match(r"(server|brain|clients)\b", args))
    manifest = next(i for i, args in copies if "pyproject.toml" in args)
    assert "deploy/constraints.txt" in steps[manifest][1]
    install = next(i for i, args in runs if "--constraint constraints.txt" in args)
    assert manifest < install < first_source
    project = next(i for i, args in runs if "pip install --no-deps ." in args)
    assert project > first_source  # the source layer never reinstalls a dependency


def test_the_base_image_is_pinned_to_an_exact_version() -> None:
    (base,) = [args for op, args in instructions() if op == "FROM"]
    assert EXACT_TAG.match(base), base
    assert "sha256:" not in base or re.search(r"@sha256:[0-9a-f]{64}$", base)  # no placeholder


def test_the_health_check_follows_the_configured_port() -> None:
    (check,) = [args for op, args in instructions() if op == "HEALTHCHECK"]
    assert "COMPANION_PORT" in check and "/healthz" in check
    assert ":8000/" not in check  # not a fixed port


def test_no_image_anywhere_is_latest_or_unpinned() -> None:
    images = [args for op, args in instructions() if op == "FROM"]
    images += [s["image"] for s in compose()["services"].values() if "build" not in s]
    assert images, "no image found"
    for image in images:
        assert EXACT_TAG.match(image), f"{image} is not pinned to an exact version"
    for path in (DOCKERFILE, COMPOSE):
        assert ":latest" not in path.read_text(), path


def test_every_service_others_wait_for_has_a_healthcheck_and_is_waited_on_when_healthy() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = condition["condition"]
            if wanted == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency
                continue
            assert wanted == "service_healthy", f"{name} starts before {dependency} is healthy"
            assert "test" in services[dependency].get("healthcheck", {}), dependency


def test_the_tables_job_waits_for_dynamodb_and_retries_until_it_answers() -> None:
    tables = compose()["services"]["tables"]
    assert tables["depends_on"]["dynamodb"]["condition"] == "service_healthy"
    assert tables["command"][:2] == ["tables", "create"] and "--wait" in tables["command"]
    for node in ("node1", "node2"):
        needs = compose()["services"][node]["depends_on"]
        assert needs["tables"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(
    "requirement",
    constraints.project_requirements(),
    ids=str,
)
def test_every_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    version = pins().get(canonicalize_name(requirement.name))
    assert version is not None, f"{requirement.name} missing: run `python -m deploy.constraints`"
    assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_the_pins_leave_out_the_dev_and_bench_extras() -> None:
    with (REPO / "pyproject.toml").open("rb") as file:
        extras = tomllib.load(file)["project"]["optional-dependencies"]
    # A dev tool may also be a runtime package's dependency (PyYAML, through uvicorn[standard]).
    runtime = set(constraints.closure(constraints.project_requirements()))
    for text in extras["dev"] + extras["bench"]:
        name = canonicalize_name(Requirement(text).name)
        if name not in runtime:
            assert name not in pins(), f"{name} is a dev/bench tool, not a runtime dependency"


def test_the_generator_writes_one_pin_per_installed_dependency(tmp_path: Path) -> None:
    written = tmp_path / "constraints.txt"
    assert constraints.main(["--output", str(written)]) == 0
    assert constraints.main(["--check", "--output", str(written)]) == 0
    written.write_text(written.read_text() + "left-pad==1.0\n")
    assert constraints.main(["--check", "--output", str(written)]) == 1
