"""Bad input, second round (issue 17): Hypothesis fuzzes what the first round did not reach.

* image folders: valid, truncated, random-byte, empty and decompression-bomb images, folders
  and broken links named like images, odd file names, one class or several;
* storage URLs: any scheme, user, password, host, port and database, the real local
  PostgreSQL server included;
* output paths: where ``hpo init`` writes a study file and ``hpo report`` a report;
* the options of ``hpo run`` / ``hpo worker``, on a study whose grid is done (so nothing
  trains, and every example takes a fraction of a second).

The property is the one the developers' guide sets for bad input: the command succeeds, or it
fails with exit 2 and one line (no traceback), and a password given in a URL is never shown.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

from hpo.cli import app
from hpo.config import DataConfig, load_study_config
from hpo.data import load_dataset, survey_folder
from hpo.errors import HpoError
from hpo.search import WorkerGridSampler, grid_search_space
from hpo.storage import close_storage, open_storage
from hpo.study import open_study
from hpo.testing import make_image_folder, write_study

_FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _one_line_or_success(result, argv) -> None:
    """The guide's rule for a command given bad input."""
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (argv, repr(result.exception))
    assert "Traceback" not in result.output, (argv, result.output)
    assert result.exit_code in (0, 2), (argv, result.exit_code, result.output)
    if result.exit_code == 2 and "Usage:" not in result.output:  # not a usage error of Click's
        errors = [line for line in result.output.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and errors[0].startswith("hpo: error: "), (argv, result.output)
        assert result.output.splitlines()[-1] == errors[0], (argv, result.output)


# -- image folders ----------------------------------------------------------------------------

def _png(size: tuple[int, int] = (12, 12), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _bomb() -> bytes:
    """A small PNG whose header claims 60,000 x 60,000 pixels (a decompression bomb)."""
    good = _png((1, 1))
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return good[:8] + struct.pack(">I", len(ihdr)) + chunk + \
        struct.pack(">I", zlib.crc32(chunk)) + good[8 + 4 + 4 + 13 + 4:]


_KINDS = ["good", "good", "good", "truncated", "random", "empty", "bomb", "folder", "link",
          "text"]


def _write(path: Path, kind: str, seed: int) -> None:
    if kind == "good":
        path.write_bytes(_png(seed=seed))
    elif kind == "truncated":
        path.write_bytes(_png(seed=seed)[:40])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(seed).bytes(200))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bomb":
        path.write_bytes(_bomb())
    elif kind == "folder":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(path.parent / "missing-target.png")
    else:
        path.with_suffix(".txt").write_text("not an image")


names = st.one_of(st.sampled_from(["a", "b", "cat", "dog", " spaced ", "ñandú", ".hidden",
                                   "UPPER", "x" * 120]),
                  st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                        blacklist_characters="/\\\x00"),
                          min_size=1, max_size=12))
folders = st.dictionaries(
    names.filter(lambda n: n not in (".", "..")),
    st.lists(st.tuples(st.sampled_from(_KINDS), st.sampled_from([".png", ".jpg", ".PNG",
                                                                 ".jpeg", ".bmp"])),
             min_size=0, max_size=6),
    min_size=0, max_size=3)


def _make_folder(root: Path, layout: dict[str, list[tuple[str, str]]]) -> Path:
    root.mkdir(parents=True)
    for c, (name, files) in enumerate(layout.items()):
        folder = root / name
        folder.mkdir()
        for i, (kind, ext) in enumerate(files):
            _write(folder / f"img{i}{ext}", kind, seed=100 * c + i)
    return root


_BOMB_BESIDE_GOOD = {"a": [("good", ".png")] * 3, "b": [("bomb", ".png"), ("good", ".jpg")]}


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURES)
@given(layout=folders, strict=st.booleans())
@example(layout=_BOMB_BESIDE_GOOD, strict=False)  # found by this test: a traceback before
@example(layout=_BOMB_BESIDE_GOOD, strict=True)
def test_any_image_folder_loads_or_fails_with_one_line(tmp_path_factory, layout, strict):
    root = _make_folder(tmp_path_factory.mktemp("fuzz") / "data", layout)
    data = DataConfig(source=str(root), channels=3)
    try:
        survey = survey_folder(root)
        dataset = load_dataset(data, (8, 8), cache_dir=root.parent / "cache", strict=strict)
    except HpoError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return
    assert len(survey.classes) >= 2 and len(dataset.classes) >= 2
    for split in (dataset.train, dataset.validation):
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (8, 8, 3)
    labels = set(dataset.train.y.tolist())
    assert labels == set(range(len(dataset.classes))), "a class without a training image"


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURES)
@given(layout=folders)
def test_hpo_init_on_any_folder_writes_a_study_or_says_why(tmp_path_factory, layout):
    root = _make_folder(tmp_path_factory.mktemp("init") / "data", layout)
    out = root.parent / "study.toml"
    argv = ["init", "--data", str(root), "--out", str(out)]
    result = CliRunner().invoke(app, argv)
    _one_line_or_success(result, argv)
    if result.exit_code == 0:
        load_study_config(out)  # what it wrote is a valid study file


# -- storage URLs -----------------------------------------------------------------------------

SECRET = "Pw-s3cr3t-!"
schemes = st.sampled_from(["sqlite", "postgresql", "postgresql+psycopg", "postgres", "mysql",
                           "journal", "http", "", "sqlite+pysqlite", "oracle"])
hosts = st.sampled_from(["127.0.0.1", "localhost", "", "[::1]", "bad host.invalid", "127.0.0.1:1",
                         "127.0.0.1:5432", "127.0.0.1:99999", "127.0.0.1:x"])
paths = st.one_of(st.sampled_from(["test", "nope_db", "", "/", "//x", "a b", "%zz", "ñ"]),
                  st.text(max_size=10))


@settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURES)
@example(scheme="journal", user="postgres", with_password=False, host="127.0.0.1",
         path="\x00", command=["studies"])  # found by Hypothesis: a traceback until mended
@given(scheme=schemes, user=st.sampled_from(["postgres", "nobody", "", "u@x", "u:v"]),
       with_password=st.booleans(), host=hosts, path=paths,
       command=st.sampled_from([["studies"], ["status", "demo"], ["trials", "demo"]]))
def test_any_storage_url_works_or_fails_with_one_line_never_showing_the_password(
        tmp_path_factory, scheme, user, with_password, host, path, command):
    folder = tmp_path_factory.mktemp("urls")
    if scheme.startswith("sqlite") or scheme == "journal":
        url = f"{scheme}:///{folder}/{path}"
    else:
        auth = f"{user}:{SECRET}@" if with_password else (f"{user}@" if user else "")
        url = f"{scheme}://{auth}{host}/{path}"
    argv = [*command, "--storage", url]
    result = CliRunner().invoke(app, argv, env={"HOME": str(folder)})
    _one_line_or_success(result, argv)
    assert SECRET not in result.output
    assert "s3cr3t" not in result.output


# -- output paths -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def done_grid(tmp_path_factory):
    """A tiny grid study whose every point is COMPLETE (written directly, nothing trained)."""
    folder = tmp_path_factory.mktemp("done")
    images = make_image_folder(folder / "data", per_class=6)
    study_file = write_study(folder / "done.toml", data=images, name="done")
    config = load_study_config(study_file)
    url = f"sqlite:///{folder / 'done.db'}"
    storage = open_storage(url)
    try:
        study = open_study(config, storage, sampler="grid")
        sampler = WorkerGridSampler(grid_search_space(config))
        spaces = {k: optuna.distributions.CategoricalDistribution(v)
                  for k, v in sampler.search_space.items()}
        for grid_id, point in enumerate(sampler.points()):
            study.add_trial(optuna.create_trial(
                state=TrialState.COMPLETE, value=0.5 + grid_id / 100, params=point,
                distributions=spaces, user_attrs={"test_accuracy": 0.5},
                system_attrs={"grid_id": grid_id, "search_space": sampler.search_space}))
    finally:
        close_storage(storage)
    return study_file, url, folder


out_paths = st.one_of(
    st.sampled_from(["", ".", "new/deeper/still", "x" * 300, "exists.txt/below", "exists.txt",
                     "/proc/hpo-cannot-write", "../up", "a/../b", "-", "dir.toml/",
                     "ñ/ü.toml", "with space/s.toml"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
            min_size=1, max_size=20))


@settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURES)
@given(where=out_paths, command=st.sampled_from(["report", "init"]),
       fmt=st.sampled_from(["md", "csv", "html", "latex"]))
@example(where="x" * 300, command="report", fmt="md")  # a traceback before (name too long)
@example(where="exists.txt/below", command="init", fmt="md")
def test_any_output_path_is_written_or_refused_with_one_line(done_grid, tmp_path_factory,
                                                             where, command, fmt):
    study_file, url, folder = done_grid
    work = tmp_path_factory.mktemp("out")
    (work / "exists.txt").write_text("keep me")
    target = where if where.startswith("/") else str(work / where)
    if command == "report":
        argv = ["report", "done", "--storage", url, "--format", fmt, "--out", target]
    else:
        argv = ["init", "--data", str(folder / "data"), "--out", target]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        os.chdir(cwd)
    _one_line_or_success(result, argv)
    assert (work / "exists.txt").read_text() == "keep me"  # nothing stored is lost


# -- options of hpo run / hpo worker ----------------------------------------------------------

counts = st.sampled_from(["0", "-1", "1", "3", "x", "1.5", "", "99999999999999999999", "nan"])
seconds = st.sampled_from(["0", "-5", "1", "2.5", "x", "inf", "nan", "", "1e308"])
options = st.lists(st.one_of(
    st.tuples(st.sampled_from(["--n-trials", "--retry-failed", "--heartbeat", "--grace",
                               "--keep-models", "--repeats", "--recycle-after",
                               "--max-consecutive-failures", "--seed"]), counts),
    st.tuples(st.sampled_from(["--timeout", "--outage-timeout", "--max-models-gb"]), seconds),
    st.tuples(st.just("--workers"), st.sampled_from(["0", "-1", "1", "x", ""])),
    st.tuples(st.just("--gpus"), st.sampled_from(["", "x", "-1", "0,0", "a,b", ",", "0,,1"])),
    st.tuples(st.just("--trials-per-gpu"), st.sampled_from(["auto", "0", "-2", "x", "1.5"])),
    st.tuples(st.just("--precision"), st.sampled_from(["auto", "float32", "fp8", ""])),
    st.tuples(st.just("--pruner"), st.sampled_from(["none", "median", "hyperband", "x"])),
    st.tuples(st.just("--objectives"), st.sampled_from(["", "x", "val_accuracy",
                                                        "val_accuracy,val_accuracy"])),
    st.tuples(st.just("--worker-name"), st.sampled_from(["w1", "", "a/b", "../x", "ñ"])),
), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURES)
@given(chosen=options, command=st.sampled_from(["run", "worker"]))
def test_any_run_options_start_or_fail_with_one_line(done_grid, chosen, command):
    study_file, url, folder = done_grid
    argv = [command, "--study", str(study_file), "--storage", url, "--quiet",
            "--cache-dir", str(folder / "cache"), "--artifacts", str(folder / "artifacts")]
    for option, value in chosen:
        argv += [option, value]
    result = CliRunner().invoke(app, argv)
    _one_line_or_success(result, argv)
    storage = open_storage(url)
    try:  # nothing stored was lost or changed: still the done grid, nothing left running
        trials = optuna.load_study(study_name="done", storage=storage).get_trials()
        assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    finally:
        close_storage(storage)


@pytest.mark.parametrize("extra, says", [
    (["--seed", "-1"], "--seed must be from 0 to 4294967295"),  # NumPy refuses it mid-run
    (["--seed", "4294967296"], "--seed must be from 0 to 4294967295"),
    (["--gpus", "0,0"], "--gpus names GPU 0 more than once"),  # two workers named gpu0
    (["--workers", "2", "--trials-per-gpu", "2"],  # K was ignored without --gpus
     "--trials-per-gpu 2 applies to workers on GPUs"),
])
def test_options_the_fuzz_found_accepted_are_refused_with_one_line(done_grid, extra, says):
    study_file, url, folder = done_grid
    argv = ["run", "--study", str(study_file), "--storage", url, "--quiet",
            "--cache-dir", str(folder / "cache"), *extra]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    _one_line_or_success(result, argv)
    assert says in result.output
