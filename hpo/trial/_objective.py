"""One trial: build the model from the trial's parameters, train, evaluate, record.

The objective returns the validation metric at the study's result epoch (``final``: the last
epoch trained, as the thesis reported; ``best``: the epoch with the best metric, whose
weights are restored before anything is evaluated). The test metrics, the figures and the
kept model come from those same weights, and ``result_epoch`` names the epoch. Everything
else a user wants to see of the run goes into the trial's user attributes: test accuracy,
confusion matrix, ROC AUC (two classes), the per-epoch history, timings, the parameter
count and where it ran.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from hpo.config import StudyConfig, TrialSettings
from hpo.data import Dataset, load_dataset
from hpo.errors import HpoError, TrialFailed
from hpo.search import TrialParams, resolve, suggest
from hpo.storage import heartbeats, storage_of
from hpo.study import attrs
from hpo.trial._artifacts import Artifacts
from hpo.trial._device import (
    apply_precision,
    backend,
    configure_gpus,
    describe_host,
    gpu_count,
    is_out_of_memory,
    keep_tensorflow_unloaded,
    resolve_precision,
    training_errors,
)
from hpo.trial._gpu import (
    GpuMonitor,
    peak_memory_bytes,
    reset_peak_memory,
    utilization_reader,
)
from hpo.trial._recorder import TrialRecorder
from hpo.trial._reuse import ModelPool
from hpo.trial._steps import compile_seconds, prepare_steps, steps_key
from hpo.trial._writer import ModelWriter

if TYPE_CHECKING:
    import keras

__all__ = ["Objective", "EpochReport", "TrialFailed", "evaluate_classifier"]

_log = logging.getLogger(__name__)
EpochReport = Callable[[optuna.Trial, int, int, dict[str, float], float], None]


def _collect_garbage() -> None:
    """Frees the trial's model and optimizer (reference cycles) once per trial, cheaply.

    One full collection per trial (``clear_session`` would add two more). After the first
    trial of a process, whatever survived its collection (the imported backend, the
    memory-mapped data, Optuna's modules: millions of objects) is moved to the permanent
    generation with ``gc.freeze``, so later collections scan only what later trials created.
    Only that first survivor set is frozen, never a later trial's objects. Before, three full
    collections scanned everything every trial (0.87 s of a 6 s demo trial on 2 cores,
    growing with the trials cached); BENCHMARKS.md, section 8.
    """
    gc.collect()
    if gc.get_freeze_count() == 0:
        gc.freeze()


def evaluate_classifier(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, confusion matrix (rows: true class) and, for two classes, ROC AUC.

    For two classes the positive class is label 1 (``True`` in the thesis's classes
    ``False`` / ``True``), and ``tp`` / ``tn`` are counted as in the thesis's tables.
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score

    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, labels=list(range(n_classes)))
    result: dict[str, Any] = {
        "test_accuracy": float((predicted == labels).mean()),
        "confusion_matrix": matrix.tolist(),
        "test_size": len(labels),
    }
    if n_classes == 2:
        result["tp"] = int(matrix[1, 1])
        result["tn"] = int(matrix[0, 0])
        if len(np.unique(labels)) == 2:
            result["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
    return result


def _predict(model: "keras.Model", images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities of ``images``, by calling the model batch by batch.

    ``model.predict`` traces (TensorFlow) or compiles (JAX) a new predict function for every
    trial, since every trial compiles the model afresh (``model.predict`` took 0.28 s per demo
    trial and 0.5 s per AlexNet trial in cProfile runs on 2 CPU cores). A direct call runs
    the same layers without that step.
    """
    import keras

    outputs = [keras.ops.convert_to_numpy(model(np.asarray(images[start:start + batch_size]),
                                                training=False))
               for start in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float64, copy=False)


class Objective:
    """The callable handed to :meth:`optuna.Study.optimize`.

    Args:
        config: The study.
        settings: How trials are trained and what they keep (the run's trial section).
        grid: Sample the study's grid (GridSampler) rather than its space.
        on_epoch: Called after every epoch (progress output), or None.
        check_stop: Called after every batch and epoch, and before the trained model is
            evaluated: raises a stop signal's exception that library code swallowed
            (the run loop's :func:`hpo.execution._signals.raise_if_swallowed`), or None.

    The section's ``steps_per_execution`` is the training steps per compiled call (Keras's
    ``steps_per_execution``); epochs, history, pruning and callbacks at epoch ends are the
    same for any value.
    """

    def __init__(self, config: StudyConfig, settings: TrialSettings, *, grid: bool = True,
                 on_epoch: EpochReport | None = None,
                 check_stop: Callable[[], None] | None = None) -> None:
        self._config = config
        self._settings = settings
        self._grid = grid
        self._on_epoch = on_epoch
        self._check_stop = check_stop
        self._steps_per_execution = settings.steps_per_execution
        #: Where figures and the kept models go (the trial section's artifacts).
        self.artifacts = Artifacts.of(settings)
        self._datasets: dict[tuple[int, int], Dataset] = {}
        self._precision: str | None = None  # resolved at the first trial: it imports Keras
        self._seed = settings.seed if settings.seed is not None else config.seed
        self._gpu_reader: Callable[[], float] | None = None  # with the precision
        self._fit_seconds = 0.0  # of the trial running, all repeats
        self._models = ModelPool()
        self._writer = ModelWriter()

    def warm_up(self) -> None:
        """Loads what every trial uses, once per process (the backend, scikit-learn's
        metrics, the figures' renderer), and sets up the GPU: the worker's start-up cost,
        not its first trial's. Called by the run loop before the first trial."""
        if self._precision is not None:
            return
        configure_gpus()  # before the backend initialises a GPU
        self._precision = resolve_precision(self._settings.precision)  # imports Keras
        keep_tensorflow_unloaded()  # under JAX: set_random_seed would import it
        self._gpu_reader = utilization_reader() if gpu_count() > 0 else None
        compile_seconds()  # starts counting compile time (JAX) before the first trial
        import sklearn.metrics  # noqa: F401 -- evaluate_classifier's, on every trial

        if self.artifacts.figures:
            import matplotlib.backends.backend_agg  # noqa: F401 -- every trial's figures

    def close(self) -> None:
        """Waits for the model save in progress, if any (the run loop calls it on every way
        out: end, Ctrl-C, SIGTERM)."""
        self._writer.close()

    def dataset(self, architecture: str) -> Dataset:
        """The study's images at ``architecture``'s size, decoded once and memory-mapped."""
        size = self._config.architectures[architecture].image_size
        if size not in self._datasets:
            self._datasets[size] = load_dataset(
                self._config.data, size, seed=self._config.seed,
                cache_dir=self._settings.cache_dir, strict=self._settings.strict)
        return self._datasets[size]

    def _shape_key(self, params: TrialParams, dataset: Dataset) -> Hashable:
        """What the model pool keys a built model by: everything its variables' shapes and
        values at build depend on."""
        return (params.architecture, dataset.input_shape, len(dataset.classes),
                self._config.architectures[params.architecture].weights, self._precision,
                repr(sorted(params.model_kwargs.items())))

    def compiled_for(self, point: Mapping[str, Any]) -> bool:
        """Whether this process holds a model with compiled steps that trained at the
        batch size of grid point ``point`` (a trial of it would compile nothing): for a
        grid worker to take such points first."""
        if self._precision is None:  # before the first trial: nothing compiled yet
            return False
        params = resolve(self._config, point)
        size = self._config.architectures[params.architecture].image_size
        dataset = self._datasets.get(size)
        if dataset is None:
            return False
        return self._models.compiled(
            self._shape_key(params, dataset),
            steps_key(params.optimizer, params.optimizer_kwargs,
                      self._steps_per_execution), params.batch_size)

    def __call__(self, trial: optuna.Trial, recorder: TrialRecorder | None = None
                 ) -> float | list[float]:
        """Trains the trial's configuration (``repeats`` times) and returns its value: the
        validation metric at the result epoch, or one value per objective of a
        multi-objective study (each the mean over the repeats).

        ``recorder``: where the trial's records go; the run loop makes it, and flushes its
        last records with the trial's end. Without one (``Study.optimize``), the objective
        makes its own and flushes it before returning."""
        own = recorder is None
        recorder = recorder if recorder is not None else TrialRecorder(trial)
        started = time.perf_counter()
        self._fit_seconds = 0.0
        self.warm_up()
        compiled_before = compile_seconds()
        sampled = suggest(trial, self._config, grid=self._grid)
        params = resolve(self._config, sampled)
        dataset = self.dataset(params.architecture)
        recorder.note("seed", self._seed)
        recorder.note("precision", self._precision)
        recorder.note("backend", backend())
        beating = heartbeats(storage_of(trial.study))
        interval = None if beating is None else beating.get_heartbeat_interval()
        # the heartbeat interval too: 'hpo reap' refuses a grace in which it sends none
        recorder.note(attrs.WORKER, {**describe_host(), "name": self._settings.worker_name,
                                  **({"heartbeat_s": interval} if interval else {})})
        recorder.note("sampler", "grid" if self._grid else "space")
        recorder.flush()  # where it runs, seen at once by hpo status and same-host reaping
        repeats = self._config.repeats  # runs with seeds seed, seed+1, ...; value: the mean
        try:
            runs: list[dict[str, float]] = []
            tests = []
            for repeat in range(repeats):
                measures, evaluation = self._train(trial, recorder, params, dataset, started,
                                                   seed=self._seed + repeat,
                                                   first=repeat == 0)
                runs.append(measures)
                if "test_accuracy" in evaluation:
                    tests.append(evaluation["test_accuracy"])
            names = self._config.objective_names
            if repeats > 1:
                self._aggregate(recorder, [run[names[0]] for run in runs], tests,
                                [int(run["result_epoch"]) for run in runs])
            values = [float(np.mean([run[name] for run in runs])) for name in names]
            return values[0] if len(values) == 1 else values
        except (HpoError, optuna.TrialPruned):
            raise
        except Exception as exc:  # noqa: BLE001 -- as Optuna's own _run_trial: any error of
            # the training fails this trial, and the worker's run loop stops after
            # max_consecutive_failures in a row (a bug or a broken environment fails them all).
            kind = "out of memory" if is_out_of_memory(exc) else exc.__class__.__name__
            reason = f"{kind}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            recorder.note(attrs.FAIL_REASON, reason)
            if not isinstance(exc, training_errors()):  # not a known training failure: keep
                import traceback  # where it came from, for the bug report

                recorder.note(attrs.FAIL_TRACEBACK,
                           "".join(traceback.format_exception(exc))[-4000:])
            raise TrialFailed(reason) from exc
        finally:
            wall = time.perf_counter() - started
            recorder.note(attrs.WALL_TIME, round(wall, 3))
            recorder.note("outside_fit_s", round(wall - self._fit_seconds, 3))
            compiled_after = compile_seconds()
            if compiled_before is not None and compiled_after is not None:
                recorder.note("compile_s", round(compiled_after - compiled_before, 3))
            if own:  # else the loop writes them with the trial's end, by its tell
                recorder.flush(with_end=True)
            _collect_garbage()

    def _save_in_background(self, number: int, model: "keras.Model", path: Path,
                            artifacts: Artifacts) -> None:
        """Saves ``model`` while the next trial trains; the pool gets it back when done."""
        self._models.hold(model)

        def save() -> None:
            try:
                artifacts.save_model(model, path)
            except OSError as exc:  # a full or read-only disk: the trial's result stands
                _log.warning("could not save the model of trial %d to %s: %s", number, path,
                             exc)
            finally:
                self._models.release(model, held=True)

        self._writer.submit(save)

    def _aggregate(self, recorder: TrialRecorder, values: list[float],
                   tests: list[float], epochs: list[int]) -> None:
        """Records the repeats' metric values, seeds, result epochs and statistics."""
        from hpo.statistics import summarize

        summary = summarize(values)
        recorder.note(attrs.REPEAT_VALUES, values)
        recorder.note("repeat_seeds", [self._seed + r for r in range(len(values))])
        recorder.note("repeat_result_epochs", epochs)
        recorder.note("value_mean", summary["mean"])
        recorder.note(attrs.VALUE_STD, summary["std"])
        recorder.note("value_ci95", summary["ci95"])
        recorder.note("value_ci95_method", summary["ci95_method"])
        if tests:
            recorder.note("repeat_test_accuracies", tests)
            recorder.note(attrs.TEST_ACCURACY, summarize(tests)["mean"])

    def _train(self, trial: optuna.Trial, recorder: TrialRecorder, params: TrialParams,
               dataset: Dataset, started: float, *, seed: int, first: bool
               ) -> tuple[dict[str, float], dict[str, Any]]:
        """One training run; returns what it measured for :data:`hpo.config.OBJECTIVES` (the
        metric at the result epoch, the training seconds, the parameter count; and that
        epoch, ``result_epoch``) and its test evaluation.

        Only the first run of a repeated configuration reports to the pruner, uploads
        figures, may keep its model and records its history, result epoch and test
        evaluation under the single-run names (its confusion matrix, ROC AUC, figures and
        model all come from that run's result epoch); the later runs add their metric,
        test accuracy and result epoch to the repeats' lists.
        """
        import keras

        from hpo.models import build_model

        keras.utils.set_random_seed(seed)
        apply_precision(str(self._precision))
        weights = self._config.architectures[params.architecture].weights
        shape_key = self._shape_key(params, dataset)

        def build() -> "keras.Model":
            # Keras's global state (layer names, the graph of TensorFlow) starts afresh for
            # every new model; it draws no random number, so the seed's draws are unchanged.
            keras.backend.clear_session(free_memory=False)
            apply_precision(str(self._precision))
            return build_model(params.architecture, input_shape=dataset.input_shape,
                               num_classes=len(dataset.classes), weights=weights,
                               **params.model_kwargs)

        built = time.perf_counter()
        model, reused = self._models.acquire(
            shape_key, build, steps_key(params.optimizer, params.optimizer_kwargs,
                                        self._steps_per_execution))
        recorder.note("model_reused", reused)
        recorder.note("build_s", round(time.perf_counter() - built, 3))
        try:
            return self._fit_and_evaluate(trial, recorder, params, dataset, model, started,
                                          seed=seed, first=first)
        finally:
            self._models.release(model)  # a model being saved is given back by the save

    def _fit_and_evaluate(self, trial: optuna.Trial, recorder: TrialRecorder,
                          params: TrialParams, dataset: Dataset, model: "keras.Model",
                          started: float, *, seed: int, first: bool
                          ) -> tuple[dict[str, float], dict[str, Any]]:
        from hpo.data import ArrayBatches
        from hpo.trial._callbacks import (EpochRecorder, NanGuard, ResultEpoch, StopCheck,
                                          pruning_callback)

        recorder.note("n_params", int(model.count_params()))
        reused, traced = prepare_steps(
            self._models, model, params.optimizer, params.learning_rate,
            params.optimizer_kwargs, steps_per_execution=self._steps_per_execution,
            batch_size=params.batch_size)
        recorder.note("steps_reused", reused)  # compiled steps kept from an earlier trial
        recorder.note("steps_traced", traced)  # ... having trained at this batch size before
        on_epoch = self._on_epoch
        per_epoch = EpochRecorder(
            (lambda e, n, logs, s: on_epoch(trial, e, n, logs, s)) if on_epoch else None,
            params.epochs)
        train = ArrayBatches(dataset.train.x, dataset.train.y, batch_size=params.batch_size,
                             shuffle=True, seed=seed)
        validation = ArrayBatches(dataset.validation.x, dataset.validation.y,
                                  batch_size=params.batch_size, shuffle=False)
        if self._gpu_reader is not None:
            reset_peak_memory()
        monitor = GpuMonitor(self._gpu_reader)
        fit_started = time.perf_counter()
        fit_seconds = 0.0
        policy = self._config.result_epoch
        result = ResultEpoch(self._config.metric, policy=policy,
                             maximize=self._config.direction == "maximize")
        try:
            callbacks = [NanGuard(), per_epoch, result]
            if self._check_stop is not None:
                callbacks.insert(0, StopCheck(self._check_stop))
            if first and not self._config.multi_objective:  # Optuna prunes single values
                callbacks.append(pruning_callback(trial, result))  # after ``result``
            with monitor:
                model.fit(train, validation_data=validation, epochs=params.epochs,
                          verbose=0, callbacks=callbacks)
        finally:
            epochs = len(per_epoch.history.get("loss", []))
            if first:  # a pruned run's too: its value is its result epoch's metric
                recorder.note("history", per_epoch.history)
                recorder.note("epoch_times_s", [round(t, 3) for t in per_epoch.epoch_times])
                recorder.note("epochs_trained", epochs)
                if result.epoch is not None:
                    recorder.note(attrs.RESULT_EPOCH, result.epoch)
                    recorder.note(attrs.RESULT_EPOCH_POLICY, policy)
                if result.best_epoch is not None:
                    recorder.note("best_epoch", result.best_epoch)
            fit_seconds = time.perf_counter() - fit_started
            self._fit_seconds += fit_seconds
            recorder.note("train_time_s", round(fit_seconds, 3))
            if epochs and fit_seconds > 0:  # training images per second of fit, all epochs
                recorder.note("images_per_s",
                            round(epochs * len(dataset.train.y) / fit_seconds, 1))
            for key, value in monitor.facts().items():
                recorder.note(key, value)
            if self._gpu_reader is not None and (peak := peak_memory_bytes()) is not None:
                recorder.note("gpu_peak_memory_mb", round(peak / 2**20, 1))
            if per_epoch.first_step_at is not None:
                recorder.note("startup_s", round(per_epoch.first_step_at - started, 3))
        if result.epoch is None or result.value is None:
            which = "at its final epoch" if policy == "final" and epochs else "at any epoch"
            raise TrialFailed(f"training reported no finite {self._config.metric} {which}")
        value = result.value
        if self._check_stop is not None:
            self._check_stop()
        result.restore(epochs)  # before anything is evaluated or saved
        artifacts = self.artifacts if first else None
        with contextlib.ExitStack() as figures:
            # The figures are drawn in a thread while this one predicts and records (Agg
            # without pyplot: safe off the main thread), and uploaded before the trial ends.
            drawn: list[Future[list[Path]]] = []
            if artifacts is not None and artifacts.figures:
                folder = Path(figures.enter_context(tempfile.TemporaryDirectory()))
                painter = figures.enter_context(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-figures"))
                title = f"trial {trial.number}"
                drawn.append(painter.submit(artifacts.draw_history, folder, title,
                                            per_epoch.history, result.epoch))
            evaluation: dict[str, Any] = {"classes": list(dataset.classes)}
            probabilities = None
            if dataset.test is not None:
                probabilities = _predict(model, dataset.test.x, params.batch_size)
                evaluation.update(evaluate_classifier(probabilities, dataset.test.y))
            if artifacts is not None and drawn:
                drawn.append(painter.submit(
                    artifacts.draw_evaluation, folder, title, evaluation,
                    dataset.test.y if dataset.test is not None else None, probabilities))
            if first:
                for key, item in evaluation.items():
                    recorder.note(key, item)
            recorder.flush()  # and learn whether another worker failed the trial meanwhile
            if artifacts is not None and not recorder.failed_under_us:
                path = artifacts.model_to_keep(trial.study, trial.number, float(value))
                if path is not None:
                    recorder.note("model_path", str(path))
                    self._save_in_background(trial.number, model, path, artifacts)
                artifacts.upload(trial, [file for job in drawn for file in job.result()])
        measures = {self._config.metric: float(value), "train_time": round(fit_seconds, 3),
                    "n_params": float(model.count_params()),
                    "result_epoch": float(result.epoch)}
        return measures, evaluation
