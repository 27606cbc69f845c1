"""The CLI as a user runs it: a real subprocess, real storage, real training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_cli, run_here


def _one_clean_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hpo: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, fragments", [
    (["run", "--study", "demo", "--n-trials", "abc"], ["'--n-trials'", "valid integer"]),
    (["run", "--study", "demo", "--pool-size", "1.5"], ["'--pool-size'", "valid integer"]),
    (["run", "--nope"], ["No such option: --nope"]),
    (["bogus"], ["No such command 'bogus'"]),
    (["best"], ["Missing argument"]),
])
def test_clicks_own_errors_are_one_line_naming_the_help(tmp_path, argv, fragments):
    """An option of the wrong type, an unknown option or command, a missing argument: one
    line and exit 2, as hpo's own errors (Click printed a usage box of several lines)."""
    line = _one_clean_error_line(run_here(*argv, cwd=tmp_path), *fragments)
    assert line.startswith("hpo: error: ") and "--help')" in line


def test_a_bare_hpo_prints_its_help(tmp_path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "Usage:" in result.stdout + result.stderr and "run" in result.stdout + result.stderr


def test_quiet_prints_only_the_best_trial(tmp_path, tiny_study):
    result = run_here("run", "--study", str(tiny_study), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("best: trial ")
    assert len(result.stdout.strip().splitlines()) == 1


def test_data_override_points_a_study_at_another_folder(tmp_path, image_folder):
    result = run_here("run", "--study", "cifar10", "--data", str(image_folder),
                      "--n-trials", "1", "--storage", f"sqlite:///{tmp_path / 'c.db'}",
                      "--quiet", cwd=tmp_path)
    # cifar10's grid trains 5-15 epochs of a 32x32 CNN: one trial on 48 images is quick.
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="cifar10", storage=f"sqlite:///{tmp_path / 'c.db'}")
    assert study.trials[0].user_attrs["classes"] == ["cats", "dogs"]


def test_space_prints_the_thesis_grid_size(tmp_path):
    result = run_here("space", "firearms", "--sampler", "grid", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    description = json.loads(result.stdout)
    assert description["size"] == 384
    assert description["parameters"]["optimizer"] == ["Adadelta", "Adagrad", "Adam", "Adamax",
                                                      "Ftrl", "Nadam", "RMSprop", "SGD"]
    text = run_here("space", "firearms", cwd=tmp_path)
    assert "grid: 2 x 8 x 4 x 3 x 2 = 384 points" in text.stdout
    tpe = run_here("space", "firearms", "--sampler", "tpe", cwd=tmp_path)
    assert "momentum" in tpe.stdout and "when optimizer in {SGD, RMSprop}" in tpe.stdout


def test_unknown_study_lists_the_known_ones(tmp_path):
    line = _one_clean_error_line(run_here("run", "--study", "nope", cwd=tmp_path),
                                 "unknown study 'nope'", "firearms")
    assert "demo" in line


def test_malformed_study_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    _one_clean_error_line(run_here("run", "--study", str(bad), cwd=tmp_path),
                          str(bad), "malformed TOML")


def test_missing_data_folder_stores_nothing(tmp_path):
    result = run_here("run", "--study", "cifar10", "--data", str(tmp_path / "nowhere"),
                      cwd=tmp_path)
    _one_clean_error_line(result, "does not exist", "--data")


def test_one_class_folder(tmp_path):
    from hpo.testing import make_image_folder

    folder = make_image_folder(tmp_path / "one", classes=("guns",), per_class=4, size=8)
    _one_clean_error_line(run_here("run", "--study", "demo", "--data", str(folder),
                                   cwd=tmp_path), "at least 2 class folders")


def test_missing_imagenet_weights_is_a_clear_error(tmp_path, image_folder):
    result = run_cli("run", "--study", "firearms", "--data", str(image_folder), cwd=tmp_path,
                     env={"KERAS_HOME": str(tmp_path / "empty-keras")})
    _one_clean_error_line(result, "ImageNet weights for 'inception_v3'", "weights = 'none'")


def _empty_cache(tmp_path: Path) -> dict[str, str]:
    """A cache of its own: a bad storage must fail before any data is decoded, whatever the
    tests before left in the session's cache."""
    return {"HPO_CACHE_DIR": str(tmp_path / "empty-cache")}


def test_unreachable_database_never_prints_the_password(tmp_path, tiny_study):
    url = "postgresql://hpo:s3cret-pw@127.0.0.1:1/hpo"
    line = _one_clean_error_line(
        run_here("run", "--study", str(tiny_study), "--storage", url, cwd=tmp_path,
                 env=_empty_cache(tmp_path)),
        "cannot open storage postgresql://hpo:***@127.0.0.1:1/hpo", "unreachable")
    assert "s3cret" not in line
    assert not (tmp_path / "empty-cache").exists() or \
        not any((tmp_path / "empty-cache").iterdir())  # nothing decoded


def test_wrong_password_is_reported_without_the_password(tmp_path, tiny_study):
    from tests.fake_postgres import PasswordRejectingServer

    server = PasswordRejectingServer()
    try:
        url = f"postgresql://postgres:wrong-pw@127.0.0.1:{server.port}/test"
        line = _one_clean_error_line(
            run_here("run", "--study", str(tiny_study), "--storage", url, cwd=tmp_path,
                     env=_empty_cache(tmp_path)),
            "authentication failed", "postgres:***@")
    finally:
        server.close()
    assert "wrong-pw" not in line


def test_read_commands_on_a_missing_database(tmp_path):
    _one_clean_error_line(run_here("best", "demo", cwd=tmp_path), "no study database")
    _one_clean_error_line(run_here("trials", "demo", "--storage",
                                   f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path),
                          "no study database")
    assert not (tmp_path / "hpo.db").exists()


def test_module_and_console_script_agree(tmp_path):
    script = Path(sys.executable).with_name("hpo")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ}, timeout=60)
    assert result.returncode == 0
    for command in ("run", "studies", "space", "best", "trials"):
        assert command in result.stdout


@pytest.mark.keras_backend("jax")  # processes: tests/conftest.py
def test_isolate_runs_each_trial_in_a_fresh_process(tmp_path, tiny_study):
    storage = f"sqlite:///{tmp_path / 'iso.db'}"
    result = run_cli("run", "--study", str(tiny_study), "--isolate", "--n-trials", "2",
                     "--storage", storage, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from hpo.config import load_study_config

    study = optuna.load_study(study_name=load_study_config(tiny_study).name, storage=storage)
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(study.trials) == 2 and len(pids) == 2


@pytest.mark.keras_backend("jax")  # processes: tests/conftest.py
def test_a_worker_replaces_its_process_every_n_trials_keeping_its_pid(tmp_path, tiny_study):
    """--recycle-after: the fresh process (exec, same PID) runs what is left of --n-trials."""
    storage = f"sqlite:///{tmp_path / 'recycle.db'}"
    result = run_cli("run", "--study", str(tiny_study), "--recycle-after", "2", "--n-trials",
                     "3", "--storage", storage, "--no-figures", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("handing over to a fresh process") == 1
    assert result.stdout.count("best: trial") == 1  # reported once, by the last process
    from hpo.config import load_study_config

    study = optuna.load_study(study_name=load_study_config(tiny_study).name, storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert len({t.user_attrs["worker"]["pid"] for t in study.trials}) == 1


def test_the_backend_that_decides_recycling_is_read_as_keras_reads_it(tmp_path, monkeypatch):
    from hpo.trial import configured_backend

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert configured_backend() == "tensorflow"  # no keras.json: Keras's default
    (tmp_path / "keras.json").write_text('{"backend": "jax", "floatx": "float32"}')
    assert configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert configured_backend() == "torch"


def test_a_database_lost_mid_run_is_one_line_not_a_traceback(monkeypatch, tiny_study):
    import sqlalchemy.exc
    from typer.testing import CliRunner

    import hpo.execution._loop
    from hpo.cli import app

    def lost(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError(
            "SELECT 1", {}, Exception("connection to server at 10.0.0.9 failed: "
                                      "postgresql://u:pw@db/x refused"))

    monkeypatch.setattr(hpo.execution._loop, "run_worker", lost)
    result = CliRunner().invoke(app, ["run", "--study", str(tiny_study)])
    assert result.exit_code == 2
    assert "lost the study database" in result.output
    assert ":pw@" not in result.output and "Traceback" not in result.output


def test_jax_compiles_once_per_host_into_the_cache_folder(tmp_path, tiny_study):
    pytest.importorskip("jax", reason="JAX is not installed (pip install '.[jax]')")
    env = {**os.environ, "KERAS_BACKEND": "jax", "HPO_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # ``hpo run``, saying at exit whether TensorFlow (installed beside JAX here) was loaded
    hpo_run = ("import atexit, sys; atexit.register(lambda: print('tensorflow loaded:', "
               "'tensorflow' in sys.modules)); from hpo.cli._app import main; main()")
    result = subprocess.run(
        [sys.executable, "-c", hpo_run, "run", "--study", str(tiny_study), "--n-trials", "1",
         "--storage", f"sqlite:///{tmp_path / 's.db'}", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    # a JAX worker never imports TensorFlow (Keras's set_random_seed would: 5.7 s)
    assert "tensorflow loaded: False" in result.stdout
    compiled = list((tmp_path / "cache" / "compile" / "jax").iterdir())
    assert compiled, "the first trial's XLA programs are kept for the next worker"
    # the trial's seconds spent compiling (JAX's compile events) and each epoch's seconds
    stored = optuna.load_study(study_name=optuna.get_all_study_names(
        f"sqlite:///{tmp_path / 's.db'}")[0], storage=f"sqlite:///{tmp_path / 's.db'}")
    attrs = stored.trials[0].user_attrs
    assert 0 < attrs["compile_s"] < attrs["wall_time_s"]
    assert len(attrs["epoch_times_s"]) == attrs["epochs_trained"]
    assert attrs["steps_reused"] is False


def test_the_compile_cache_is_on_by_default_and_can_be_turned_off(tmp_path, tiny_study,
                                                                   monkeypatch):
    from hpo.config import RunSettings
    from hpo.execution import plan_run

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.setenv(name, "recorded, so that undo removes what plan_run sets")
        monkeypatch.delenv(name)
    plan_run(RunSettings.create(study=str(tiny_study), cache_dir=tmp_path / "off",
                                compile_cache=False))
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ
    plan_run(RunSettings.create(study=str(tiny_study), cache_dir=tmp_path / "on"))
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "on" / "compile" / "jax")
    assert (tmp_path / "on" / "compile" / "jax").is_dir()
