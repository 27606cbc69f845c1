"""Small refusals found by trying the session's features as a user would: each one line and
exit 2 (or an exception naming the setting), never a quiet wrong answer."""

from __future__ import annotations

import optuna
import pytest

import hpo
from hpo.errors import InvalidSetting, StudyError
from hpo.reporting import compare_trials
from hpo.storage import open_storage
from tests.conftest import run_here


@pytest.mark.parametrize("setting, value", [("workers", 2), ("gpus", "all"), ("isolate", True),
                                            ("trials_per_gpu", 2), ("recycle_after", 5)])
def test_hpo_run_refuses_settings_that_start_processes_instead_of_ignoring_them(
        tiny_study, sqlite_url, setting, value):
    with pytest.raises(InvalidSetting) as refused:
        hpo.run(tiny_study, storage=sqlite_url, n_trials=1, **{setting: value})
    assert refused.value.setting == setting
    assert "hpo run" in refused.value.render(str)


def test_compare_names_a_missing_trial_and_refuses_a_trial_against_itself(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'c.db'}")
    study = optuna.create_study(study_name="c", storage=storage, direction="maximize")
    for values in ([0.5, 0.6], [0.7, 0.8]):
        study.add_trial(optuna.create_trial(value=sum(values) / 2,
                                            user_attrs={"repeat_values": values}))
    assert compare_trials(study, 0, 1)["a"]["trial"] == 0
    with pytest.raises(StudyError, match="no trial 99"):
        compare_trials(study, 0, 99)
    with pytest.raises(StudyError, match="twice"):
        compare_trials(study, 1, 1)


@pytest.mark.parametrize("option, value", [("--grace", "0"), ("--grace", "-1"),
                                           ("--max-retry", "-1")])
def test_reap_refuses_an_out_of_range_option_naming_it(tmp_path, option, value):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    optuna.create_study(study_name="r", storage=open_storage(url))
    done = run_here("reap", "r", "--storage", url, option, value, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert option in line and "storage" not in line, line


def test_status_with_an_edited_grid_is_refused_not_counted(tmp_path, tiny_study):
    url = f"sqlite:///{tmp_path / 's.db'}"
    from hpo.config import load_study_config
    from hpo.study import open_study

    config = load_study_config(tiny_study)
    open_study(config, open_storage(url), sampler="grid")
    edited = tiny_study.read_text().replace('learning_rate = [0.01, 0.001]',
                                            'learning_rate = [0.01, 0.001, 0.1]')
    assert edited != tiny_study.read_text()
    tiny_study.write_text(edited)
    done = run_here("status", str(tiny_study), "--storage", url, cwd=tmp_path)
    assert done.returncode == 2 and "different grid" in done.stderr, done.stdout
    by_name = run_here("status", config.name, "--storage", url, "--json", cwd=tmp_path)
    assert by_name.returncode == 0 and '"grid"' not in by_name.stdout  # the file moved on


def test_a_class_missing_from_the_test_split_is_said(tmp_path, caplog):
    """train/{x,y,z} with test/{x,y}: the test accuracy covers two of three classes."""
    import logging
    import shutil

    from hpo.config import DataConfig
    from hpo.data import load_dataset
    from hpo.testing import make_image_folder

    folder = make_image_folder(tmp_path / "d", classes=("x", "y", "z"), per_class=4,
                               layout="pre-split")
    shutil.rmtree(folder / "test" / "z")
    with caplog.at_level(logging.WARNING, logger="hpo"):
        dataset = load_dataset(DataConfig(source=str(folder)), (16, 16),
                               cache_dir=tmp_path / "cache")
    assert dataset.classes == ("x", "y", "z")
    said = [r.getMessage() for r in caplog.records if "no image of class" in r.getMessage()]
    assert len(said) == 1 and "test split" in said[0] and "z" in said[0], said


def test_a_cache_build_killed_midway_leaves_no_folder_for_good(tmp_path):
    """kill -9 during the cache build left .tmp-KEY-* (as large as the images decoded so
    far) in the cache folder forever; the next build on the host removes it, not a live
    build's."""
    import socket
    import subprocess
    import sys

    from hpo.data._cache import _remove_dead_builds

    host = socket.gethostname().replace("-", "_")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    gone = tmp_path / f".tmp-abc-{host}-{dead}-x1"
    live = tmp_path / f".tmp-abc-{host}-{__import__('os').getpid()}-x2"
    other_host = tmp_path / f".tmp-abc-elsewhere-{dead}-x3"
    for folder in (gone, live, other_host):
        folder.mkdir()
    _remove_dead_builds(tmp_path)
    assert not gone.exists() and live.exists() and other_host.exists()


def test_the_python_api_is_as_quiet_as_the_cli(tiny_study, tmp_path):
    """The README's Python snippet printed TensorFlow's C++ start-up lines, Optuna's INFO
    lines and an ExperimentalWarning; the CLI prints none of them."""
    import subprocess
    import sys

    script = ("import hpo\n"
              f"study = hpo.run({str(tiny_study)!r}, sampler='grid', n_trials=1,\n"
              f"              storage='sqlite:///{tmp_path / 'q.db'}')\n"
              f"print(hpo.best(study.study_name, 'sqlite:///{tmp_path / 'q.db'}').params)\n")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert "learning_rate" in done.stdout
