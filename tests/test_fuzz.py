"""Hypothesis fuzzes the study-file loader and the CLI: no input yields a traceback."""

from __future__ import annotations

import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hpo.cli import app
from hpo.config import load_study_config
from hpo.errors import ConfigError

KEYS = ["name", "metric", "direction", "seed", "pruner", "data", "training", "grid", "space",
        "architectures", "source", "channels", "split", "optimizer", "learning_rate",
        "batch_size", "epochs", "architecture", "choices", "low", "high", "log", "step",
        "when", "image_size", "weights", "momentum", "dropout", "alexnet", "small_cnn",
        "objectives", "val_accuracy", "train_time", "n_params", "repeats"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True), st.text(max_size=12), st.sampled_from(KEYS))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=20)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


def _to_toml(value) -> str:
    """A small TOML writer for the generated documents (None becomes a missing key)."""
    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v).replace("inf", "inf").replace("nan", "nan")
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v if x is not None) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {scalar(x)}" for k, x in v.items()
                                   if x is not None) + "}"
        return '""'
    return "\n".join(f"{k} = {scalar(v)}" for k, v in value.items() if v is not None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_structured_study_files_load_or_fail_with_one_line(tmp_path, document):
    path = tmp_path / "fuzz.toml"
    path.write_text(_to_toml(document))
    try:
        tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError:
        pass
    try:
        load_study_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_text_loads_or_fails_with_one_line(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if text.isprintable() else
                     text.encode("utf-8", "replace"))
    try:
        load_study_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


words = st.one_of(st.sampled_from(["space", "studies", "best", "trials", "status", "report",
                                   "export", "--json", "--csv", "--sampler", "grid", "tpe",
                                   "--storage", "sqlite:///nonexistent/x.db", "demo",
                                   "firearms", "--format", "xml", "--model", "-1", "--out",
                                   "--study", "nope", "--heartbeat", "0"]),
                  st.text(max_size=10))


@settings(max_examples=150, deadline=None)
@given(argv=st.lists(words, max_size=5))
def test_the_cli_never_shows_a_traceback(argv):
    if argv and argv[0] in ("run", "worker", "dashboard"):
        argv = argv[1:]  # those start long-running work; the other commands are fuzzed
    result = CliRunner().invoke(app, argv, catch_exceptions=True)
    assert result.exit_code in (0, 2), (argv, result.output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{argv}: {result.exception!r}")
    assert "Traceback" not in result.output
