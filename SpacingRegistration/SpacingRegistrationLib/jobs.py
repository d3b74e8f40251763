"""Long work in a child process: the one job controller of the panel, the web app, the console and the tests.

Kinds of job: a registration, a study, an accuracy check. The pattern is SlicerMONAIAuto3DSeg's
(``MONAIAuto3DSegLib/process.py``): the engine runs as a child process of ``PythonSlicer`` (started like
``slicer.util.launchConsoleProcess`` does: a pipe on stdout, text mode), a reader thread fills a queue, and the
front end drains the queue from its own loop (a QTimer there, here any loop), so its main thread never waits.
Cancel follows SlicerElastix (``Elastix.py``: Apply becomes Cancel and kills the engine process), softened:
SIGTERM to the child's process group first (the child stops at its next iteration), SIGKILL to the group (pool
workers, and the real Python behind the PythonSlicer launcher) after ``CANCEL_GRACE_SECONDS``.

Unlike those extensions the child speaks a protocol: one JSON object per stdout line (``started``, ``iteration``,
``plan``, ``run``, ``warning``, ``result``, ``cancelled``, ``error``), its other output goes to ``job.log`` in the
job folder. The inputs are files in the job folder (images as .nrrd, settings or study spec as ``job.json``); the
outputs come back from it (``output/transform.tfm``, ``result.json``, ``trace.csv``, the result page
``result.html`` and the pickled result of a registration; the study folder and the pickled analysis of a study;
the pickled outcome of an accuracy check). A child that dies without a result (killed, out of memory, an ITK
exception) is one clear message and no result.
Qt-free and MRML-free: the caller turns results into nodes on its main thread.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import SimpleITK as sitk

from .accuracy import AccuracyCheckError
from .images import InputImageError
from .registration import RegistrationFailedError
from .resources import ResourceError
from .settings import RegistrationSettings, SettingsError, to_dict
from .study_runner import check_executor
from .study_spec import StudySpec
from .study_store import StudyFolderError

#: Seconds a cancelled child gets to stop by itself before its process group is killed.
CANCEL_GRACE_SECONDS = 0.5
#: Folder holding SpacingRegistrationLib: the child imports the library from it (PYTHONPATH).
LIBRARY_ROOT = Path(__file__).resolve().parents[1]
#: Files of a job folder.
JOB_FILE, LOG_FILE, OUTPUT_FOLDER = "job.json", "job.log", "output"
RESULT_PICKLE, STUDY_PICKLE, ACCURACY_PICKLE = "result.pickle", "study.pickle", "accuracy.pickle"
#: Jobs whose cancel keeps what finished (their folders are resumable): their result may come with a cancel.
RESUMABLE_KINDS = ("study", "accuracy")
#: Final states of a job.
FINISHED, FAILED, CANCELLED = "finished", "failed", "cancelled"


class JobError(RuntimeError):
    """A job ended without a result; the message says why in one sentence."""


#: Errors of the user's inputs that a failed child re-raises in the parent as their own type (else JobError).
USER_ERROR_TYPES = {cls.__name__: cls for cls in (SettingsError, InputImageError, ResourceError, StudyFolderError,
                                                  AccuracyCheckError, RegistrationFailedError)}


def command(python: str, folder: Path) -> list[str]:
    """The child's command line: the project's own CLI, ``job`` subcommand."""
    return [str(python), "-m", "SpacingRegistrationLib.cli", "job", str(folder)]


def child_environment(base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with the library on PYTHONPATH and unbuffered output."""
    environment = dict(os.environ if base is None else base)
    paths = [str(LIBRARY_ROOT)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class Job:
    """A running child process and what it reported. ``poll()`` never blocks; ``wait()`` does.

    Attributes set once the job is ``done``: ``state`` (finished, failed or cancelled), ``error`` (one sentence,
    failed jobs only) and ``result`` (the child's ``result`` event, finished jobs and cancelled studies only).
    """

    def __init__(self, kind: str, folder: Path, python: str, environment: dict | None = None):
        self.kind = kind
        self.folder = Path(folder)
        self.state = "running"
        self.error: str | None = None
        self.error_type: str | None = None  # the exception class the child reported
        self.result: dict | None = None
        self.last_progress: dict | None = None
        self.inputs = None  # free for the caller (e.g. the volume nodes the outputs belong to)
        self._events: queue.Queue = queue.Queue()
        self._cancel_requested = False
        log = (self.folder / LOG_FILE).open("w")
        popen = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
        try:
            self.process = subprocess.Popen(command(python, self.folder), stdout=subprocess.PIPE, stderr=log,
                                            stdin=subprocess.DEVNULL, env=child_environment(environment),
                                            text=True, encoding="utf-8", errors="replace", bufsize=1, **popen)
        finally:
            log.close()
        self._reader = threading.Thread(target=self._read, name=f"SpacingRegistration {kind} job reader",
                                        daemon=True)
        self._reader.start()

    # --- reader thread ------------------------------------------------------------------------------------------

    def _read(self):
        error, result, cancelled = None, None, False
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # not protocol (the child sends everything else to job.log)
            if not isinstance(event, dict) or "event" not in event:
                continue
            kind = event["event"]
            if kind == "result":
                result = event
            elif kind == "error":
                error = event.get("message") or "the job failed"
                self.error_type = event.get("type")
            elif kind == "cancelled":
                cancelled = True
            self._events.put(event)
        returncode = self.process.wait()
        if self._cancel_requested or cancelled:
            state = CANCELLED
            # a cancelled registration returns nothing; a cancelled study or accuracy check keeps its finished runs
            result = result if self.kind in RESUMABLE_KINDS and result is not None else None
        elif result is not None and returncode == 0:
            state = FINISHED
        else:
            state, result = FAILED, None
            if error is None:
                error = (f"The {self.kind} process was killed ({_signal_name(returncode)}; the system sends SIGKILL "
                         "when memory runs out) and left no result." if returncode < 0 else
                         f"The {self.kind} process stopped (exit status {returncode}) without a result; "
                         f"see {self.folder / LOG_FILE}.")
        if state != FINISHED:
            self._kill_group()  # pool workers a killed child may have left
        self.state, self.error, self.result = state, error if state == FAILED else None, result
        self._events.put({"event": "end", "state": state, "error": self.error})

    # --- caller's thread ----------------------------------------------------------------------------------------

    def poll(self) -> list[dict]:
        """The events that arrived since the last poll (in order); the last event of a job is ``end``."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        for event in events:
            if event["event"] in ("iteration", "run"):
                self.last_progress = event
        return events

    @property
    def done(self) -> bool:
        return not self._reader.is_alive()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def cancel(self):
        """Ask the child to stop (SIGTERM to its process group), and kill the group if it has not stopped within
        the grace time. On Windows, where a console child cannot be asked, the process tree is killed at once."""
        if self.done or self._cancel_requested:
            return
        self._cancel_requested = True
        if os.name != "posix":
            self._kill_group()
            return
        try:  # the whole group: behind PythonSlicer (a launcher) runs the real Python
            os.killpg(self.process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        timer = threading.Timer(CANCEL_GRACE_SECONDS, self._kill_group)
        timer.daemon = True
        timer.start()

    def _kill_group(self):
        """Kill the child's process group (its pool workers, and the real Python behind a launcher); on Windows
        its process tree (``taskkill /T``, where MONAIAuto3DSeg uses psutil)."""
        try:
            if os.name == "posix":
                os.killpg(self.process.pid, signal.SIGKILL)
            elif self.process.poll() is None:
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.process.pid)], capture_output=True,
                               check=False)
        except OSError:  # gone already (ProcessLookupError), or not ours
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (or ``timeout`` seconds pass); True when it ended."""
        self._reader.join(timeout)
        return self.done

    def run_to_end(self, on_event=None, cancel=None, interval: float = 0.05) -> str:
        """Poll until the end, giving each event to ``on_event``; a set ``cancel`` (threading.Event) cancels."""
        while True:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
                if event["event"] == "end":
                    return self.state
            if cancel is not None and cancel.is_set():
                self.cancel()
            time.sleep(interval)

    def remove_folder(self):
        """Delete the job folder (inputs, outputs, log) once its results are in the scene."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the child wrote outside the protocol (tracebacks, warnings)."""
        try:
            text = (self.folder / LOG_FILE).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(collections.deque(text, maxlen=lines))

    # --- results ------------------------------------------------------------------------------------------------

    def _require(self, state: str):
        if not self.done:
            raise JobError(f"the {self.kind} job is still running")
        if self.state == FAILED:
            raise USER_ERROR_TYPES.get(self.error_type, JobError)(self.error)
        if self.state != state and not (self.kind in RESUMABLE_KINDS and self.result is not None):
            raise JobError(f"the {self.kind} was cancelled" if self.state == CANCELLED else
                           f"the {self.kind} has no result")

    def registration_result(self):
        """The RegistrationResult the child computed (registration.RegistrationResult)."""
        self._require(FINISHED)
        with (self.folder / OUTPUT_FOLDER / RESULT_PICKLE).open("rb") as stream:
            return pickle.load(stream)  # written by this project's own child, in its private job folder

    def study_result(self):
        """(store, analysis or None, report paths or None) of a study that finished or was cancelled."""
        from .study_store import open_study

        self._require(FINISHED)
        store = open_study(self.result["study_folder"])
        path = self.folder / OUTPUT_FOLDER / STUDY_PICKLE
        if not path.is_file():
            return store, None, None
        with path.open("rb") as stream:
            analysis, report_paths = pickle.load(stream)
        return store, analysis, report_paths

    def accuracy_result(self):
        """The accuracy.CheckOutcome of a check that finished or was cancelled (ranking of the finished runs)."""
        self._require(FINISHED)
        with (self.folder / OUTPUT_FOLDER / ACCURACY_PICKLE).open("rb") as stream:
            return pickle.load(stream)


def _new_folder(folder, kind: str) -> Path:
    if folder is None:
        return Path(tempfile.mkdtemp(prefix=f"spacingreg-{kind}-"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_inputs(folder: Path, description: dict, fixed: sitk.Image, moving: sitk.Image):
    sitk.WriteImage(fixed, str(folder / "fixed.nrrd"))
    sitk.WriteImage(moving, str(folder / "moving.nrrd"))
    (folder / JOB_FILE).write_text(json.dumps(description, indent=2, default=float))


def start_registration(fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings, folder=None,
                       python: str | None = None, environment: dict | None = None, mask: sitk.Image | None = None,
                       initial_transform: sitk.Transform | None = None) -> Job:
    """Start one registration in a child process (``python``: default this interpreter). ``mask`` (a labelmap,
    non-zero = inside) goes to ``mask.nrrd``, ``initial_transform`` (fixed to moving, LPS) to ``initial.tfm``
    (``initial.h5`` for a composite, which ITK's text format cannot hold); the child gives both to registration.run."""
    folder = _new_folder(folder, "registration")
    initial = None
    if mask is not None:
        sitk.WriteImage(mask, str(folder / "mask.nrrd"))
    if initial_transform is not None:
        initial = "initial.h5" if isinstance(initial_transform, sitk.CompositeTransform) else "initial.tfm"
        sitk.WriteTransform(initial_transform, str(folder / initial))
    _write_inputs(folder, {"kind": "registration", "settings": to_dict(settings), "mask": mask is not None,
                           "initial_transform": initial}, fixed, moving)
    return Job("registration", folder, python or sys.executable, environment)


def start_study(fixed: sitk.Image, moving: sitk.Image, spec: StudySpec, study_folder, executor: str = "pool",
                workers: int | None = None, scheduler: str | None = None, folder=None, python: str | None = None,
                environment: dict | None = None) -> Job:
    """Start (or resume) a study into ``study_folder`` in a child process, on ``executor`` as the CLI runs it."""
    check_executor(executor, scheduler, workers)
    folder = _new_folder(folder, "study")
    _write_inputs(folder, {"kind": "study", "spec": spec.to_dict(), "study_folder": str(Path(study_folder).resolve()),
                           "executor": executor, "workers": workers, "scheduler": scheduler}, fixed, moving)
    return Job("study", folder, python or sys.executable, environment)


def start_accuracy_check(fixed: sitk.Image, settings: RegistrationSettings, output_folder, candidates=None,
                         options: dict | None = None, mask: sitk.Image | None = None, executor: str = "pool",
                         workers: int | None = None, scheduler: str | None = None, folder=None,
                         python: str | None = None, environment: dict | None = None) -> Job:
    """Start (or resume) the accuracy check (accuracy.check_accuracy) of ``settings`` on ``fixed`` into
    ``output_folder`` in a child process: ``candidates`` by name, ``options`` the fields of accuracy.CheckOptions."""
    check_executor(executor, scheduler, workers)
    folder = _new_folder(folder, "accuracy")
    sitk.WriteImage(fixed, str(folder / "fixed.nrrd"))
    if mask is not None:
        sitk.WriteImage(mask, str(folder / "mask.nrrd"))
    description = {"kind": "accuracy", "settings": to_dict(settings), "output": str(Path(output_folder).resolve()),
                   "candidates": None if candidates is None else [str(c) for c in candidates],
                   "options": dict(options or {}), "mask": mask is not None, "executor": executor, "workers": workers,
                   "scheduler": scheduler}
    (folder / JOB_FILE).write_text(json.dumps(description, indent=2, default=float))
    return Job("accuracy", folder, python or sys.executable, environment)
