"""The Python API, hpo init, the notebook, and output that fits where it goes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

import hpo
from hpo.errors import ConfigError
from hpo.testing import make_image_folder
from tests.conftest import run_cli, run_here

REPO = Path(__file__).resolve().parents[1]


def test_the_public_api_is_explicit_and_typed():
    assert set(hpo.__all__) >= {"load_study_config", "run", "best", "load_study", "HpoError",
                                "ConfigError", "DataError", "StorageError", "StudyError"}
    for name in hpo.__all__:
        assert getattr(hpo, name) is not None
    assert issubclass(hpo.ConfigError, hpo.HpoError)
    with pytest.raises(ConfigError, match="unknown setting"):
        hpo.run("demo", bogus=1)


def test_init_writes_a_study_that_run_accepts(tmp_path):
    folder = make_image_folder(tmp_path / "pistols", classes=("pistol", "phone"),
                               per_class=10, size=20, corrupt=1)
    result = run_here("init", "--data", str(folder), "--architecture", "small_cnn",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "20 images, 2 classes (phone, pistol), layout class-folders" in result.stdout
    assert "unreadable file(s)" in result.stdout
    assert "next: hpo run --study studies/pistols.toml" in result.stdout
    config = hpo.load_study_config(tmp_path / "studies" / "pistols.toml")
    assert config.grid_size == 192
    again = run_here("init", "--data", str(folder), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    ran = run_here("run", "--study", "studies/pistols.toml", "--n-trials", "1", "--storage",
                   f"sqlite:///{tmp_path / 'p.db'}", "--quiet", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert len(optuna.load_study(study_name="pistols",
                                 storage=f"sqlite:///{tmp_path / 'p.db'}").trials) == 1


def test_output_to_a_pipe_has_no_control_characters_and_json_lines_parse(tmp_path,
                                                                         tiny_study):
    plain = run_cli("run", "--study", str(tiny_study), "--n-trials", "1", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", plain.stdout)
    events = run_here("run", "--study", str(tiny_study), "--n-trials", "1", "--log-json",
                      "--study-name", "json-run", cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    parsed = [json.loads(line) for line in events.stdout.splitlines()]
    kinds = [e["event"] for e in parsed]
    assert "epoch" in kinds and "trial" in kinds and kinds[-1] == "summary"
    trial = next(e for e in parsed if e["event"] == "trial")
    assert trial["state"] == "COMPLETE" and 0 <= trial["value"] <= 1


def test_the_notebook_runs_headless(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    assert (tmp_path / "notebook.db").is_file()
