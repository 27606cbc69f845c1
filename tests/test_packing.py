"""Several trials per GPU: how many, their names, and each worker's share of memory."""

from __future__ import annotations

import pytest

from hpo.execution._launch import plan_workers
from hpo.execution._packing import MEMORY_SHARE_ENV, memory_env, plan_packing
from tests.conftest import run_cli, run_here

#: The subject here is processes and storage, not the backend: the hpo processes train on
#: JAX, which starts faster (tests/conftest.py, ``_keras_backend_of_the_test``).
pytestmark = pytest.mark.keras_backend("jax")

H100 = (80_000.0, 81_559.0)  # free, total MiB


def test_a_number_is_taken_as_asked():
    assert plan_packing(3, ["0"], [], {}).per_gpu == 3


def test_auto_packs_from_the_largest_measured_peak_with_headroom():
    packing = plan_packing("auto", ["0", "1"], [7_000.0, 9_000.0], {"0": H100, "1": H100})
    # 9,000 MiB x 1.2 = 10,800 per trial: floor(0.9 x 81,559 / 10,800) = 6
    assert packing.per_gpu == 6
    assert "9,000 MiB" in packing.why


def test_auto_is_bounded_by_the_least_free_gpu():
    busy = (25_000.0, 81_559.0)
    assert plan_packing("auto", ["0", "1"], [9_000.0], {"0": H100, "1": busy}).per_gpu == 2


@pytest.mark.parametrize(("peaks", "memory", "reason"), [
    ([], {"0": H100}, "no trial of this study has measured"),
    ([9_000.0], {"0": None}, "cannot be read"),
])
def test_auto_without_facts_runs_one_per_gpu_and_says_why(peaks, memory, reason):
    packing = plan_packing("auto", ["0"], peaks, memory)
    assert packing.per_gpu == 1 and reason in packing.why


def test_packed_workers_get_unique_names_and_a_share_of_memory():
    specs = plan_workers(workers=1, gpus="0,1", per_gpu=2)
    assert [s.name for s in specs] == ["gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "0", "1", "1"]
    for spec in specs:
        assert spec.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == spec.env[MEMORY_SHARE_ENV] == \
            "0.4500"
        assert spec.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert [s.name for s in plan_workers(workers=1, gpus="0", per_gpu=1)] == ["gpu0"]
    assert MEMORY_SHARE_ENV not in memory_env(1)


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_a_bad_trials_per_gpu_is_one_line_and_exit_2(tmp_path, tiny_study, value):
    result = run_here("run", "--study", str(tiny_study), "--gpus", "0", "--trials-per-gpu",
                      value, cwd=tmp_path)
    assert result.returncode == 2
    assert "--trials-per-gpu" in result.stderr and "auto" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_two_workers_share_a_gpu_under_their_own_names(tmp_path, tiny_study):
    """On a machine without a GPU the workers train on the CPU, but they are planned,
    named and recorded as on one: gpu0.0 and gpu0.1."""
    storage = f"sqlite:///{tmp_path / 'packed.db'}"
    result = run_cli("run", "--study", str(tiny_study), "--gpus", "0", "--trials-per-gpu", "2",
                     "--storage", storage, "--no-figures", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trials per GPU: 2 per GPU, as asked" in result.stderr + result.stdout
    status = run_here("status", str(tiny_study), "--storage", storage, "--json", cwd=tmp_path)
    import json

    names = {w["name"] for w in json.loads(status.stdout)["workers"].values()}
    assert names <= {"gpu0.0", "gpu0.1"} and names
