"""What the desktop panel and the web page show of the work, owned in one place.

A Workflow starts and cancels registrations and studies through a logic (logic.RegistrationLogic: child-process
jobs), turns their events into the states and texts both front ends show (status line, progress, grid summary,
warnings, diagnosis rows, one-sentence errors), and on a job's end has the logic make the MRML nodes, on the
thread that calls ``poll()``. The front ends only bind it: the panel's QTimer and the web app's asyncio loop
call ``poll()`` and copy the attributes to their widgets. Qt-free and MRML-free (the logic touches MRML).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .diagnosis_rows import WARNING_ROW
from .diagnostics import STOP_REASON_TEXT
from .jobs import CANCELLED, FAILED
from .parameters import expected_iterations

log = logging.getLogger(__name__)

#: Seconds between two polls of a running job by a front end (the panel's QTimer, the web app's loop).
POLL_SECONDS = 0.1


def grid_summary_text(geometry) -> str:
    return (f"{geometry.inside_count} control points inside the image, {geometry.outside_count} outside "
            f"({list(geometry.points_per_axis)} per axis); image inside the transform domain: {geometry.coverage:.0%}")


def warnings_text(warnings) -> str:
    return "\n\n".join(f"- {w}" for w in warnings) if warnings else "No warnings."


class Workflow:
    """States and texts of the registration, the study and the control grid; see the module docstring.

    ``progress`` and ``studyProgress`` are fractions (0..1); ``progress`` is None while a registration runs
    without a known number of iterations (a busy indicator). ``error`` is the last failure in one sentence ("" when
    none); ``errorDetails`` what the child logged. Job folders go under ``jobsFolder`` and are kept there; without
    one they are temporary folders, removed when the job's outputs are in the scene.
    """

    def __init__(self, logic, jobsFolder=None):
        self.logic = logic
        self.jobsFolder = None if jobsFolder is None else Path(jobsFolder)
        self.registrationJob = None
        self.studyJob = None
        self.status = ""
        self.progress = 0.0
        self.studyStatus = ""
        self.studyProgress = 0.0
        self.gridSummary = ""
        self.gridWarnings = ""
        self.warnings: list[str] = []
        self.diagnosis: list[tuple[str, str]] = []
        self.error = ""
        self.errorDetails = ""
        self.errorCount = 0  # failures so far: a front end that shows each once compares it with its own count
        self.outputs = None  # (transformNode, tableNode) of the last registration
        self.study = None  # {"store", "analysis", "reportPaths", "nodes"} of the last study with a report
        self._expectedIterations = 0
        self._outputNodes = (None, None)  # the nodes the running registration fills (None: new ones)

    # --- state ----------------------------------------------------------------------------------------------------

    @property
    def registrationRunning(self) -> bool:
        return self.registrationJob is not None

    @property
    def studyRunning(self) -> bool:
        return self.studyJob is not None

    @property
    def warningsText(self) -> str:
        return warnings_text(self.warnings)

    def fail(self, what: str, error=None, details: str = ""):
        """Record a failure as one sentence (``what: error``) for the front end to show."""
        self.error = f"{what}: {error}" if error is not None else what
        self.errorDetails = details
        self.errorCount += 1
        if error is not None and not isinstance(error, ValueError):  # SettingsError, InputImageError are ValueErrors
            log.error("%s", self.error, exc_info=error)

    def clearError(self):
        self.error = self.errorDetails = ""

    def _jobFolder(self, kind: str):
        if self.jobsFolder is None:
            return None
        self.jobsFolder.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{kind}-", dir=self.jobsFolder)

    def _ended(self, job):
        if self.jobsFolder is None:
            job.remove_folder()

    @staticmethod
    def _discard(folder):
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    # --- control grid ---------------------------------------------------------------------------------------------

    def showGrid(self, volumeNode, settings) -> bool:
        try:
            if volumeNode is None:
                raise ValueError("choose a fixed volume: the grid is drawn over it")
            _nodes, geometry = self.logic.showControlGrid(volumeNode, settings=settings)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self.fail("Cannot show the grid", error)
            return False
        self.showGridSummary(geometry)
        self.clearError()
        self.status = "Grid shown."
        return True

    def hideGrid(self, scene=None) -> int:
        count = self.logic.hideControlGrid(scene=scene)
        self.gridSummary = self.gridWarnings = ""
        self.status = f"Grid hidden ({count} models removed)."
        return count

    def showGridSummary(self, geometry):
        self.gridSummary = grid_summary_text(geometry)
        self.gridWarnings = "\n".join(geometry.warnings)

    # --- registration ---------------------------------------------------------------------------------------------

    def startRegistration(self, fixedVolumeNode, movingVolumeNode, settings, outputTransformNode=None,
                          outputTableNode=None) -> bool:
        """Start a registration in a child process; False (and ``error``) when it cannot start."""
        if self.registrationRunning:
            return False
        folder = self._jobFolder("registration")
        try:
            job = self.logic.startRegistration(fixedVolumeNode, movingVolumeNode, settings, jobFolder=folder)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self._discard(folder)
            self.fail("Cannot start the registration", error)
            return False
        self._outputNodes = (outputTransformNode, outputTableNode)
        self.registrationJob = job
        self._expectedIterations = expected_iterations(self.logic.settingsFrom(settings))
        self.clearError()
        self.progress = 0.0 if self._expectedIterations else None
        self.status = "Initialising..."
        return True

    def cancelRegistration(self):
        if self.registrationJob is not None:
            self.registrationJob.cancel()
            self.status = "Cancelling..."

    def _onRegistrationEvent(self, event):
        kind = event["event"]
        if kind == "iteration":
            if self._expectedIterations:
                self.progress = min(1.0, event["count"] / max(self._expectedIterations, event["count"]))
            self.status = (f"iteration {event['iteration']} (libLBFGS run {event['lbfgs_run'] + 1}), "
                           f"metric {event['metric']:.6g}, step {event['step_max_voxels']:.3g} voxels")
        elif kind == "end":
            job, self.registrationJob = self.registrationJob, None
            self.progress = 1.0
            self._finishRegistration(job)
            self._ended(job)

    def _finishRegistration(self, job):
        if job.state == CANCELLED:
            self.status = "Cancelled: no result (nothing was added to the scene)."
            return
        if job.state == FAILED:
            self.status = "Registration failed."
            self.fail("Registration failed", job.error, job.log_tail())
            return
        try:
            result, transformNode, tableNode = self.logic.finishRegistration(job, *self._outputNodes)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self.status = "Registration failed."
            self.fail("Failed to create the output nodes", error)
            return
        self.outputs = (transformNode, tableNode)
        self.diagnosis = self.logic.diagnosisFromTableNode(tableNode)
        self.warnings = [value for name, value in self.diagnosis if name == WARNING_ROW]
        self.showGridSummary(result.grid)
        self.status = f"Finished: {STOP_REASON_TEXT.get(result.stop_reason, result.stop_reason)}."

    # --- study ----------------------------------------------------------------------------------------------------

    def startStudy(self, fixedVolumeNode, movingVolumeNode, spec, folder, executor="pool") -> bool:
        """Start (or resume) a study in a child process; False (and ``error``) when it cannot start."""
        if self.studyRunning:
            return False
        jobFolder = self._jobFolder("study")
        try:
            job = self.logic.startStudy(fixedVolumeNode, movingVolumeNode, spec, folder, executor=executor,
                                       jobFolder=jobFolder)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self._discard(jobFolder)
            self.fail("Cannot start the study", error)
            return False
        self.studyJob = job
        self.clearError()
        self.studyProgress = 0.0
        self.studyStatus = f"Starting the study ({len(spec.runs())} runs) in {folder}..."
        return True

    def cancelStudy(self):
        if self.studyJob is not None:
            self.studyJob.cancel()
            self.studyStatus = "Cancelling (finished runs are kept)..."

    def _onStudyEvent(self, event):
        kind = event["event"]
        if kind == "plan":
            where = (f"a pool of {event['workers']} processes" if event["executor"] == "pool" else
                     "Dask" if event["executor"] == "dask" else "one process")
            self.studyStatus = f"0/{event['total']} runs on {where}"
        elif kind == "run":
            self.studyProgress = event["done"] / max(1, event["total"])
            self.studyStatus = f"{event['done']}/{event['total']} runs ({event['run_id']})"
        elif kind == "end":
            job, self.studyJob = self.studyJob, None
            self._finishStudy(job)
            self._ended(job)

    def _finishStudy(self, job):
        if job.state == FAILED:
            self.studyStatus = "Study failed."
            self.fail("Study failed", job.error, job.log_tail())
            return
        if job.result is None:
            self.studyStatus = "Cancelled: finished runs are kept in the study folder; run again to resume."
            return
        try:
            store, analysis, reportPaths, nodes = self.logic.finishStudy(job)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self.studyStatus = "Study failed."
            self.fail("Failed to show the study", error)
            return
        cancelled = " (cancelled: finished runs kept; run again to resume)" if job.result["cancelled"] else ""
        if analysis is None:
            self.studyStatus = f"{len(store.rows)} runs finished{cancelled}."
            return
        self.study = {"store": store, "analysis": analysis, "reportPaths": reportPaths, "nodes": nodes}
        self.warnings = [statement["text"] for statement in analysis.statements]
        self.studyProgress = 1.0
        self.studyStatus = f"{len(store.rows)} runs; report: {reportPaths['html']}{cancelled}"

    # --- polling --------------------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Handle the events of the running jobs (nodes are made here, on the caller's thread); True if any."""
        events = 0
        for job, handle in ((self.registrationJob, self._onRegistrationEvent), (self.studyJob, self._onStudyEvent)):
            if job is None:
                continue
            for event in job.poll():
                events += 1
                handle(event)
                if event["event"] == "warning":
                    log.warning("%s", event["text"])
        return events > 0
