"""The ``hpo`` command line. Typer lives here only; every command is a thin layer over the API.

Every :class:`hpo.HpoError` becomes one line on standard error and exit status 2. A command
whose output pipe closes early (``hpo trials demo | head -1``) stops there, quietly, with
status 141, as ``cat`` or ``git log`` killed by SIGPIPE do (``hpo run`` goes on: its
progress is dropped instead).
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import unicodedata
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from hpo.config import DEFAULT_POOL_SIZE, DEFAULT_RECYCLE_AFTER, MIN_POOL_SIZE
from hpo.errors import ConfigError, NoStudies, StudyError, writing
from hpo.config import DEFAULT_STORAGE
from hpo.storage import mask_url
from hpo.study import attrs

#: Click's base error, as Typer raises it (Typer 0.2x ships its own copy of Click).
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(typer.core.TyperGroup):
    """Click's own errors (an option of the wrong type, a missing argument, an unknown
    command) as one ``hpo: error:`` line naming the help that fixes it, exit 2, as hpo's
    own errors are; Click printed a usage box of several lines. A bare ``hpo`` still
    prints the help."""

    def main(self, args: Any = None, *, standalone_mode: bool = True,  # type: ignore[override]
             **kwargs: Any) -> Any:
        argv = sys.argv[1:] if args is None else list(args)
        if not standalone_mode or not argv:
            return super().main(argv, standalone_mode=standalone_mode, **kwargs)
        try:
            code = super().main(argv, standalone_mode=False, **kwargs)
        except _CLICK_ERROR as error:
            context = getattr(error, "ctx", None)
            where = context.command_path if context is not None else "hpo"
            message = error.format_message()  # type: ignore[attr-defined]
            exit_code = int(getattr(error, "exit_code", 2))
            _fail(f"{message} (see '{where} --help')")  # writes the line
            raise SystemExit(exit_code) from None
        except typer.Abort:
            sys.stderr.write("Aborted!\n")
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="hpo",
    help="Hyperparameter search for Keras image classifiers, on Optuna.",
    cls=_OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)

StorageOpt = Annotated[str, typer.Option(
    "--storage", envvar="HPO_STORAGE", show_envvar=True,
    help="Study database URL: sqlite:///file.db, postgresql://user:pw@host/db, "
         "journal:///file.log.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class Precision(str, Enum):
    auto = "auto"
    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


def _fail(message: str, code: int = 2) -> typer.Exit:
    from hpo.reporting import write_or_drop

    # A closed pipe or a hung-up terminal (SIGHUP) must not change the exit status.
    write_or_drop(sys.stderr, f"hpo: error: {_one_line(message)}\n")
    return typer.Exit(code)


#: The exit status of a command whose output pipe closed: a shell's for a process SIGPIPE
#: killed.
_PIPE_CLOSED = 128 + signal.SIGPIPE


def _one_line(text: str) -> str:
    """``text`` with control characters and line breaks (those of the user's own input
    echoed back: a path, a URL) written as escapes, so an error stays one printable line."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turns how a command ends (bad input, a lost database, SIGINT, SIGTERM, SIGHUP) into one
    line and its exit status (:func:`hpo.execution.failure_line`); a setting is named by its
    flag. Output whose reader went away (a closed pipe: the only pipe these commands write
    to) ends the command quietly, status 141."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hpo.config import flag
        from hpo.execution import ENDINGS, failure_line
        from hpo.reporting import drop_stream

        try:
            return func(*args, **kwargs)
        except ENDINGS as exc:
            message, code = failure_line(exc, flag)
            raise _fail(message, code) from None
        except BrokenPipeError:
            drop_stream(sys.stdout)  # nothing more to say, and nothing left to flush at exit
            raise typer.Exit(_PIPE_CLOSED) from None

    return wrapper


def _existing_storage(url: str) -> Any:
    """Opens a storage that must already hold studies (read-only commands): nothing is
    created there, neither a file nor a table."""
    from hpo.storage import StorageOptions, open_storage

    return open_storage(url, StorageOptions(), create=False)


@app.callback()
def _configure() -> None:
    """Hyperparameter search for Keras image classifiers, on Optuna."""
    from hpo.reporting import quiet_backends, setup_logging

    quiet_backends()
    setup_logging(quiet=False)


@app.command()
@handles_errors
def run(
    study: Annotated[str, typer.Option("--study", "-s",
                                       help="Study name (see 'hpo studies') or .toml path.")],
    sampler: Annotated[str, typer.Option(
        help="grid, tpe, random, qmc, cmaes, nsgaii, gp (or Optuna's class names).")] = "grid",
    storage: StorageOpt = DEFAULT_STORAGE,
    data: Annotated[Optional[Path], typer.Option(
        help="Image folder overriding the study file's data.source.")] = None,
    study_name: Annotated[Optional[str], typer.Option(
        help="Name of the study in the database (default: the study file's name).")] = None,
    n_trials: Annotated[Optional[int], typer.Option(
        help="Most trials to run (default: the rest of the grid; unbounded otherwise).")] = None,
    timeout: Annotated[Optional[float], typer.Option(
        help="Seconds after which no new trial starts.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Seed of weights, shuffling and sampler (default: the study's).")] = None,
    precision: Annotated[Precision, typer.Option(
        help="auto = mixed_float16 on a GPU, float32 on a CPU.")] = Precision.auto,
    pruner: Annotated[Optional[str], typer.Option(
        help="none, median, successive_halving, hyperband (default: the study's).")] = None,
    retry_failed: Annotated[int, typer.Option(
        help="Times a failed grid point is trained again.")] = 1,
    heartbeat: Annotated[int, typer.Option(
        help="Seconds between heartbeats of a running trial.")] = 60,
    grace: Annotated[Optional[int], typer.Option(
        help="Seconds without heartbeat before a trial counts as lost (default 3x).")] = None,
    outage_timeout: Annotated[float, typer.Option(
        help="Seconds a worker waits for an unreachable study database (a restart, a "
             "failover, a network cut) before it gives up.")] = 600.0,
    connect_timeout: Annotated[float, typer.Option(
        help="Seconds a database server may take to answer a new connection before the "
             "open fails (PostgreSQL, MySQL).")] = 10.0,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Image cache folder (default $HPO_CACHE_DIR or ~/.cache/hpo).")] = None,
    strict: Annotated[bool, typer.Option(
        help="Stop on an unreadable image, or on the same image in two splits or under "
             "two classes, instead of warning.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Print only the best trial at the end.")] = False,
    artifacts: Annotated[Path, typer.Option(
        help="Folder for trial figures (Optuna artifacts) and the best models.")]
    = Path("hpo-artifacts"),
    keep_models: Annotated[int, typer.Option(
        help="Keep the trained model of this many best trials (0: none).")] = 3,
    max_models_gb: Annotated[float, typer.Option(
        help="Most gigabytes all kept models in --artifacts take together; past it each "
             "study keeps only its best model.")] = 10.0,
    figures: Annotated[bool, typer.Option(
        help="Upload training curves, confusion matrix and ROC curve per trial.")] = True,
    workers: Annotated[int, typer.Option(
        help="CPU worker processes sharing the study (with 'hpo run').")] = 1,
    gpus: Annotated[Optional[str], typer.Option(
        help="One worker per GPU: 'all' or ids like 0,1,2 (with 'hpo run').")] = None,
    trials_per_gpu: Annotated[str, typer.Option(
        help="Workers sharing each GPU, each held to its share of the GPU's memory: a "
             "number, or auto (from the peak GPU memory the study's trials measured).")]
    = "1",
    worker_name: Annotated[str, typer.Option(
        help="Name recorded with this worker's trials.")] = "main",
    log_json: Annotated[bool, typer.Option(
        help="Print one JSON object per event (epoch, trial, summary) instead of text.")]
    = False,
    objectives: Annotated[Optional[str], typer.Option(
        help="Multi-objective search: the metric, then train_time and/or n_params, e.g. "
             "val_accuracy,train_time ('hpo best' then shows the Pareto front).")] = None,
    repeats: Annotated[Optional[int], typer.Option(
        help="Train each configuration R times (seeds seed..seed+R-1); value: the mean.")]
    = None,
    enqueue_defaults: Annotated[bool, typer.Option(
        help="Start from the thesis baseline: each optimizer at its Keras defaults.")]
    = False,
    isolate: Annotated[bool, typer.Option(
        help="Run each trial in a fresh process (frees all GPU memory between trials).")]
    = False,
    recycle_after: Annotated[Optional[int], typer.Option(
        help="Replace the worker process with a fresh one every N trials, returning the "
             "memory the backend keeps between trials (0: never; default "
             f"{DEFAULT_RECYCLE_AFTER} with TensorFlow, never with JAX).")] = None,
    pool_size: Annotated[int, typer.Option(
        help="With --workers N or --gpus on PostgreSQL: the workers of this host share this "
             "many database connections through a private PgBouncer (transaction pooling, "
             f"a Unix socket only; at least {MIN_POOL_SIZE}); 0: each worker connects "
             "directly (about 3 connections each). Without the pgbouncer program the "
             "workers connect directly, and one line says so.")] = DEFAULT_POOL_SIZE,
    compile_cache: Annotated[bool, typer.Option(
        envvar="HPO_COMPILE_CACHE",
        help="Keep compiled XLA programs (JAX) in the cache folder, shared by every worker "
             "on this host, so that a worker's first trial does not compile again.")] = True,
    steps_per_execution: Annotated[int, typer.Option(
        help="Training steps per compiled call (Keras's steps_per_execution): fewer "
             "dispatches where a step is short (small models and batches on a GPU); "
             "epochs, history, pruning and results are the same for any value.")] = 1,
    max_consecutive_failures: Annotated[int, typer.Option(
        help="Stop the worker (exit 1) after this many failed trials in a row: a bug or a "
             "broken environment, not one trial's problem.")] = 3,
) -> None:
    """Run (or resume) a study: train one Keras model per trial, store results in Optuna.

    'hpo worker' takes the same options and runs exactly one worker in this process, for a
    job scheduler (Slurm array, Kubernetes Job); 'hpo run --workers N' or '--gpus 0,1'
    starts and supervises N such workers.
    """
    settings = _run_settings(locals())
    from hpo.execution import execute

    _exit_with(execute(settings))


def _run_settings(options: dict[str, Any]) -> Any:
    """The validated :class:`hpo.config.RunSettings` of ``hpo run`` / ``hpo worker``."""
    from hpo.config import RunSettings
    from hpo.reporting import setup_logging

    setup_logging(options["quiet"])
    values = {k: getattr(v, "value", v) for k, v in options.items()}
    return RunSettings.create(**values)


def _exit_with(code: int) -> None:
    if code != 0:
        raise typer.Exit(code)


@app.command("worker", help="Run one worker of a study in this process (same options as "
                            "'hpo run'; for job schedulers).")
@handles_errors
@wraps(inspect.unwrap(run))  # the same options as 'hpo run'
def worker(**options: Any) -> None:
    from hpo.execution import work

    _exit_with(work(_run_settings(options)))


@app.command()
@handles_errors
def studies(storage: StorageOpt = DEFAULT_STORAGE, json: JsonOpt = False) -> None:
    """List the study files you can run and the studies stored in the database."""
    from hpo.config import available_studies, load_study_config
    from hpo.reporting import study_summaries, to_json

    files = []
    for name, path in available_studies().items():
        config = load_study_config(path)
        files.append({"name": name, "file": str(path), "description": config.description,
                      "grid_size": config.grid_size, "data": config.data.source})
    stored: list[dict[str, Any]] = []
    try:
        stored = study_summaries(_existing_storage(storage))
    except NoStudies:
        pass  # "(none yet)": and nothing created there
    if json:
        typer.echo(to_json({"files": files, "storage": mask_url(storage), "stored": stored}))
        return
    typer.echo("study files:")
    for f in files:
        grid = f"grid {f['grid_size']}" if f["grid_size"] else "no grid"
        typer.echo(f"  {f['name']:<22} {grid:<10} {f['description']}")
    typer.echo(f"studies in {mask_url(storage)}:")
    if not stored:
        typer.echo("  (none yet)")
    for s in stored:
        states = ", ".join(f"{n} {k.lower()}" for k, n in s["states"].items())
        best = "" if s["best_value"] is None else f"  best {s['metric']}={s['best_value']:.4f}"
        linked = "".join(f"  (linked {family}: {name})" for family, name in s["links"].items())
        typer.echo(f"  {s['name']:<22} {s['trials']} trials ({states or 'none'}){best}{linked}")


@app.command()
@handles_errors
def schema() -> None:
    """Print the JSON Schema of a study file (for editors that validate TOML, e.g. Taplo:
    put '#:schema ./study.schema.json' on a study file's first line)."""
    import json

    from hpo.config import study_file_schema

    typer.echo(json.dumps(study_file_schema(), indent=2))


@app.command()
@handles_errors
def space(
    study: Annotated[str, typer.Argument(help="Study name or .toml path.")],
    sampler: Annotated[str, typer.Option(help="grid shows the grid; any other the space.")]
    = "grid",
    json: JsonOpt = False,
) -> None:
    """Print a study's search space (or grid) and its size."""
    from hpo.config import load_study_config
    from hpo.reporting import to_json
    from hpo.search import canonical_sampler, describe_space

    config = load_study_config(study)
    grid = canonical_sampler(sampler) == "grid"
    if grid and not config.grid:
        raise ConfigError(f"study {config.name!r} has no [grid]; use --sampler tpe")
    description = describe_space(config, grid=grid)
    if json:
        typer.echo(to_json(description))
        return
    typer.echo(f"study {config.name} ({config.path})")
    if grid:
        sizes = " x ".join(str(len(v)) for v in config.grid.values())
        typer.echo(f"grid: {sizes} = {config.grid_size} points")
    else:
        typer.echo(f"space for --sampler {sampler}:")
    for name, values in description["parameters"].items():
        shown = ", ".join(map(str, values)) if isinstance(values, list) else values
        typer.echo(f"  {name:<20} {shown}")
    typer.echo("fixed: " + ", ".join(f"{k}={v}" for k, v in description["fixed"].items()))


@app.command()
@handles_errors
def best(
    study: Annotated[str, typer.Argument(help="Study name in the database.")],
    storage: StorageOpt = DEFAULT_STORAGE,
    json: JsonOpt = False,
) -> None:
    """Print the best trial of a study (over its grid and its search, when they are linked)."""
    from hpo.errors import StudyError
    from hpo.reporting import format_params, link_lines, pair_best, to_json, trial_record
    from hpo.study import load_existing_study

    loaded = load_existing_study(study, _existing_storage(storage))
    if len(loaded.directions) > 1:
        _print_pareto_front(loaded, json)
        if not json:
            for line in link_lines(loaded):
                typer.echo(line)
        return
    found = pair_best(loaded)
    if found is None:
        raise StudyError(f"study {study!r} has no completed trial yet; run it first")
    owner, trial = found
    record = trial_record(trial)
    if json:
        typer.echo(to_json({**record, "study": owner.study_name}))
        return
    metric = loaded.user_attrs.get(attrs.METRIC, "value")
    where = "" if owner.study_name == loaded.study_name else \
        f" of linked {owner.user_attrs.get(attrs.FAMILY, '')} study {owner.study_name!r}"
    typer.echo(f"best trial {trial.number}{where}: {metric}={trial.value:.4f}")
    typer.echo(f"  params: {format_params(trial.params)}")
    if "value_std" in record:
        low, high = record["value_ci95"]
        method = record.get("value_ci95_method", "t-based")  # stored by an earlier hpo
        typer.echo(f"  over {len(record['repeat_values'])} runs: mean {record['value_mean']:.4f}"
                   f" (std {record['value_std']:.4f}), 95% CI [{low:.4f}, {high:.4f}] "
                   f"({method}), seeds {record['repeat_seeds']}")
    if "result_epoch" in record:
        policy = record.get("result_epoch_policy", "")
        runs = record.get("repeat_result_epochs")
        typer.echo(f"  result_epoch: {record['result_epoch']} ({policy} epoch"
                   + (f"; runs: {runs}; the confusion matrix and ROC AUC are the first "
                      "run's" if runs else "") + ")")
    for key in ("test_accuracy", "roc_auc", "confusion_matrix", "epochs_trained",
                "best_epoch", "n_params", "wall_time_s"):
        if key in record:
            typer.echo(f"  {key}: {record[key]}")


def _print_pareto_front(study: Any, json: bool) -> None:
    """``hpo best`` of a multi-objective study: every trial no other trial beats on all
    objectives, by trial number."""
    from hpo.errors import StudyError
    from hpo.reporting import pareto_front_lines, to_json, trial_record
    from hpo.study import objective_names, pareto_front

    front = pareto_front(study)
    if not front:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet; run it "
                         "first")
    if json:
        typer.echo(to_json({"objectives": objective_names(study),
                            "directions": [d.name.lower() for d in study.directions],
                            "pareto_front": [trial_record(t) for t in front]}))
        return
    for line in pareto_front_lines(study, front):
        typer.echo(line)


@app.command()
@handles_errors
def trials(
    study: Annotated[str, typer.Argument(help="Study name in the database.")],
    storage: StorageOpt = DEFAULT_STORAGE,
    json: JsonOpt = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """List a study's trials (table, --json or --csv)."""
    from hpo.reporting import link_lines, to_json, trial_record, trials_csv, trials_table
    from hpo.study import load_existing_study

    loaded = load_existing_study(study, _existing_storage(storage))
    all_trials = loaded.get_trials(deepcopy=False)
    if json:
        typer.echo(to_json([trial_record(t) for t in all_trials]))
    elif csv:
        typer.echo(trials_csv(all_trials), nl=False)
    else:
        from hpo.study import objective_names

        typer.echo(trials_table(all_trials, loaded.user_attrs.get(attrs.METRIC, "value"),
                                tuple(objective_names(loaded)[1:])))
        for line in link_lines(loaded):
            typer.echo(line)


@app.command()
@handles_errors
def status(
    study: Annotated[str, typer.Argument(help="Study name (or .toml path) to report on.")],
    storage: StorageOpt = DEFAULT_STORAGE,
    study_name: Annotated[Optional[str], typer.Option(
        help="Name in the database, if not the study file's.")] = None,
    artifacts: Annotated[Path, typer.Option(
        help="The runs' --artifacts folder, whose disk use is shown.")]
    = Path("hpo-artifacts"),
    json: JsonOpt = False,
) -> None:
    """Show grid coverage (done / running / failed / left), workers seen, an ETA and the
    disk the kept models and figures take."""
    from hpo.config import load_study_config
    from hpo.reporting import study_status, to_json
    from hpo.study import load_existing_study

    try:
        config = load_study_config(study)
    except ConfigError:
        config = None  # a study stored by name only: no grid to compare with
    name = study_name or (config.name if config else study)
    loaded = load_existing_study(name, _existing_storage(storage))
    from hpo.search import space_hash

    stored_grid = loaded.user_attrs.get("hpo:space_hash:grid")
    if config is not None and config.grid and stored_grid is not None and \
            stored_grid != space_hash(config, grid=True):
        raise StudyError(f"study {name!r} was created from a different grid (hash "
                         f"{stored_grid}) than {config.path} now describes; its coverage "
                         "would count points it never had: pass the study's name, or the "
                         "file as it was")
    if config is None:  # by name: the study file it was created from, if it is still there
        with contextlib.suppress(ConfigError):  # and still describes the stored grid
            stored = load_study_config(str(loaded.user_attrs.get(attrs.STUDY_FILE, "")))
            if loaded.user_attrs.get("hpo:space_hash:grid") == space_hash(stored, grid=True):
                config = stored
    report = study_status(loaded, config, artifacts.resolve())
    if json:
        typer.echo(to_json(report))
        return
    typer.echo(f"study {name} in {mask_url(storage)}")
    typer.echo("trials: " + (", ".join(f"{n} {k.lower()}" for k, n in
                                       report["states"].items()) or "none") +
               (f" ({report['not_run']} of the failed never ran: given up or withdrawn, "
                "no failure of their point)" if report["not_run"] else ""))
    grid = report.get("grid")
    if grid:
        typer.echo(f"grid: {grid['size']} points: {grid['done']} done, {grid['running']} "
                   f"running, {grid['failed']} failed, {grid['left']} left")
        for point in grid["failed_points"]:
            typer.echo(f"  failed {point['tries']}x: {point['params']}: "
                       f"{point['reasons'][-1] if point['reasons'] else ''}")
    for link in report["linked"]:
        typer.echo(f"linked {link['family']} study {link['study']}: {link['trials']} trials "
                   f"({link['taken_from_grid']} grid trial(s) taken by the search as history;"
                   f" 'hpo status {link['study']}')")
    for key, worker in report["workers"].items():
        typer.echo(f"worker {worker['name'] or '?'} ({key}"
                   f"{', GPU ' + worker['gpu'] if worker['gpu'] else ''}): "
                   f"{worker['trials']} trials, {worker['running']} running")
    if report.get("eta_s") is not None:
        minutes, seconds = divmod(int(report["eta_s"]), 60)
        typer.echo(f"ETA: {minutes // 60}h{minutes % 60:02d}m{seconds:02d}s at "
                   f"{report['mean_trial_s']:.1f}s per trial")
    use = report["artifacts"]
    typer.echo(f"artifacts in {use['directory']}: {use['study_models']} model(s) of this "
               f"study, {_size(use['study_models_bytes'])}; all models "
               f"{_size(use['models_bytes'])}; figures and other files "
               f"{_size(use['other_bytes'])}")


def _size(count: int) -> str:
    """Bytes in a unit a person reads: 1.2 GB, 340 MB, 12 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


@app.command()
@handles_errors
def reap(
    study: Annotated[str, typer.Argument(help="Study name in the database.")],
    storage: StorageOpt = DEFAULT_STORAGE,
    grace: Annotated[int, typer.Option(
        help="Seconds without heartbeat after which a RUNNING trial is lost.")] = 180,
    max_retry: Annotated[int, typer.Option(help="Re-queue a lost trial this often.")] = 1,
) -> None:
    """Mark lost trials (dead worker, stale heartbeat) FAIL and re-queue them, with no worker
    alive. A trial whose last heartbeat is younger than --grace is never failed, and a
    --grace shorter than two heartbeats of a running trial's worker is refused."""
    from hpo.storage import StorageOptions, open_storage
    from hpo.study import check_reap_grace, load_existing_study, reap_dead_trials

    from hpo.errors import InvalidSetting

    if grace < 1:
        raise InvalidSetting("grace", "must be at least 1 second", grace)
    if max_retry < 0:
        raise InvalidSetting("max_retry", "must be 0 or more", max_retry)
    opened = open_storage(storage, StorageOptions(heartbeat_interval=max(1, grace // 3),
                                                  grace_period=grace, max_retry=max_retry),
                          create=False)
    loaded = load_existing_study(study, opened)
    check_reap_grace(loaded, grace)
    reaped = reap_dead_trials(loaded, max_retry=max_retry, grace=grace, spare_fresh=True)
    typer.echo(f"reaped {len(reaped)} trial(s)" + (": " + ", ".join(map(str, reaped))
                                                  if reaped else ""))


@app.command()
@handles_errors
def dashboard(
    study: Annotated[Optional[str], typer.Option(help="Study to open first.")] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    artifacts: Annotated[Path, typer.Option(help="The runs' --artifacts folder.")]
    = Path("hpo-artifacts"),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    allow_write: Annotated[bool, typer.Option(
        help="Let the dashboard change studies (delete, tell, notes); read-only otherwise.")]
    = False,
    token_file: Annotated[Optional[Path], typer.Option(
        help="File holding the token a remote browser must present (else "
             "$HPO_DASHBOARD_TOKEN, else one is generated and printed once).")] = None,
) -> None:
    """Browse studies, trials and their figures in optuna-dashboard.

    On a non-loopback --host (a GPU server viewed from a laptop) every request must carry a
    token, as with Jupyter: open the printed URL once (?token=...; the browser keeps a
    cookie), or send 'Authorization: Bearer TOKEN'.
    """
    import os

    from hpo.reporting import dashboard_token, make_dashboard_server
    from hpo.storage import study_id
    from hpo.study import load_existing_study

    opened = _existing_storage(storage)
    path = ""
    if study is not None:
        path = f"studies/{study_id(load_existing_study(study, opened))}"
    token, generated = dashboard_token(host, token_file, dict(os.environ))
    server = make_dashboard_server(opened, artifacts, host=host, port=port,
                                   allow_write=allow_write, token=token)
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    url = f"http://{shown}:{server.server_port}/dashboard/{path}"
    mode = "read-write" if allow_write else "read-only"
    if token is None:
        typer.echo(f"optuna-dashboard on {mask_url(storage)} ({mode}): {url}")
    elif generated:  # printed once, here, and never logged
        typer.echo(f"optuna-dashboard on {mask_url(storage)} ({mode}, token required): "
                   f"{url}?token={token}")
    else:
        typer.echo(f"optuna-dashboard on {mask_url(storage)} ({mode}, token required: the "
                   f"one you gave): {url}")
    typer.echo("press Ctrl-C to stop")
    from hpo.execution import serve_until_signal

    from hpo.reporting import write_or_drop

    code = serve_until_signal(server)
    write_or_drop(sys.stdout, "dashboard stopped\n")  # its terminal may have hung up
    _exit_with(code)


@app.command()
@handles_errors
def report(
    study: Annotated[str, typer.Argument(help="Study name (or its .toml file).")],
    storage: StorageOpt = DEFAULT_STORAGE,
    format: Annotated[str, typer.Option(
        "--format", help="md, csv, latex or html (one self-contained file).")] = "md",
    out: Annotated[Optional[Path], typer.Option(
        help="Write report.EXT into this folder instead of printing it.")] = None,
) -> None:
    """The thesis's tables from a study: defaults and best per optimizer, importances."""
    from hpo.config import load_study_config
    from hpo.reporting import build_report, linked_summary, write_report
    from hpo.study import load_existing_study

    try:
        config = load_study_config(study)
        name, training = config.name, config.training
    except ConfigError:
        name, training = study, {}
    loaded = load_existing_study(name, _existing_storage(storage))
    built = build_report(loaded, training)
    text = write_report(built, format, out)
    for link in linked_summary(loaded):  # the report is of this study: the other is named
        typer.echo(f"note: this report is of study {name!r}; its linked {link['family']} "
                   f"study {link['study']!r} has {link['trials']} trials ('hpo report "
                   f"{link['study']}')", err=True)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {out / ('report.' + ('tex' if format == 'latex' else format))}")


@app.command()
@handles_errors
def export(
    study: Annotated[str, typer.Argument(help="Study name in the database.")],
    out: Annotated[Path, typer.Option(help="Where to write the .keras model.")],
    model: Annotated[str, typer.Option(help="'best' or a trial number.")] = "best",
    storage: StorageOpt = DEFAULT_STORAGE,
    artifacts: Annotated[Path, typer.Option(help="The runs' --artifacts folder.")]
    = Path("hpo-artifacts"),
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Copy the trained model of the best trial (or of trial N) to a .keras file (into
    --out as STUDY-trialN.keras when --out is a folder)."""
    from hpo.study import load_existing_study
    from hpo.trial import export_model

    loaded = load_existing_study(study, _existing_storage(storage))
    target: int | str = int(model) if model.isdigit() else model
    if model == "best" and len(loaded.directions) == 1:
        from hpo.reporting import pair_best  # the trial `hpo best` names: over the grid and

        found = pair_best(loaded)  # the search linked to it
        if found is not None:
            loaded, target = found[0], found[1].number
    number, written = export_model(loaded, artifacts.resolve(), out, model=target,
                                   force=force)
    where = "" if loaded.study_name == study else f" of {loaded.study_name}"
    typer.echo(f"wrote {written} (trial {number}{where})")


@app.command()
@handles_errors
def init(
    data: Annotated[Path, typer.Option(help="The image folder to study.")],
    name: Annotated[Optional[str], typer.Option(
        help="Study name (default: the folder's name).")] = None,
    architecture: Annotated[Optional[str], typer.Option(
        help="Model (default: alexnet for photos, small_cnn for small images).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Study file to write (default: studies/NAME.toml).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing study file.")] = False,
) -> None:
    """Inspect an image folder and write a ready study file (the thesis grid, a TPE space)."""
    from hpo.config import load_study_config
    from hpo.data import default_architecture, study_toml, survey_folder

    survey = survey_folder(data)
    for line in survey.describe():
        typer.echo(line)
    study = name or "".join(c if c.isalnum() or c in "-_" else "-" for c in survey.root.name)
    chosen = architecture or default_architecture(survey)
    target = out or Path("studies") / f"{study}.toml"
    with writing(target, "the study file"):
        if target.exists() and not force:
            raise ConfigError(f"{target} exists; pass --force to overwrite it or --out "
                              "elsewhere")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(study_toml(survey, name=study, architecture=chosen), encoding="utf-8")
    config = load_study_config(target)  # what we wrote must load
    typer.echo(f"wrote {target}: {chosen}, grid of {config.grid_size} points")
    typer.echo(f"next: hpo run --study {target} --sampler grid    "
               f"(or --sampler tpe --n-trials 50)")


@app.command()
@handles_errors
def compare(
    study: Annotated[str, typer.Argument(help="Study name in the database.")],
    a: Annotated[int, typer.Argument(help="First trial number.")],
    b: Annotated[int, typer.Argument(help="Second trial number.")],
    storage: StorageOpt = DEFAULT_STORAGE,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    json: JsonOpt = False,
) -> None:
    """Is one configuration really better? Welch's t-test on two repeated trials' runs."""
    from hpo.reporting import compare_trials, format_params, to_json
    from hpo.study import load_existing_study

    result = compare_trials(load_existing_study(study, _existing_storage(storage)), a, b, alpha)
    if json:
        typer.echo(to_json(result))
        return
    for key in ("a", "b"):
        side = result[key]
        low, high = side["ci95"]
        typer.echo(f"trial {side['trial']}: mean {side['mean']:.4f} (std {side['std']:.4f}, "
                   f"95% CI [{low:.4f}, {high:.4f}]) over {side['n']} runs  "
                   f"{format_params(side['params'])}")
    typer.echo(f"95% CI: {result['a']['ci95_method']}")
    verdict = "differ significantly" if result["significant"] else "do not differ significantly"
    typer.echo(f"Welch's t-test: t = {result['t']:.3f}, p = {result['p']:.4f}: the two "
               f"configurations {verdict} at alpha = {alpha}")


def main() -> None:
    """Console-script entry point."""
    from hpo.reporting import flush_or_drop
    from hpo.trial import keep_freed_memory

    keep_freed_memory()  # hpo's own process: a CPU step reuses the last one's pages
    try:
        app()
    finally:
        flush_or_drop()  # what cannot be written now must not turn the status into 120


if __name__ == "__main__":
    main()
