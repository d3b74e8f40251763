"""What the desktop panel and the web page show of the work, owned in one place.

A Workflow starts and cancels registrations, studies and accuracy checks through a logic (logic.RegistrationLogic:
child-process jobs), turns their events into the states and texts both front ends show (status line, progress, grid summary,
warnings, diagnosis rows, one-sentence errors), and on a job's end has the logic make the MRML nodes, on the
thread that calls ``poll()``. The front ends only bind it: the panel's QTimer and the web app's asyncio loop
call ``poll()`` and copy the attributes to their widgets. Qt-free and MRML-free (the logic touches MRML).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .accuracy import resolve_candidates
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


#: Columns of the accuracy ranking both front ends show (one row per candidate, best first).
ACCURACY_COLUMNS = ("Rank", "Candidate", "Mean error (voxels)", "Worst seed (voxels)", "Time (s)", "vs yours")


def accuracy_rows(ranking) -> list[tuple[str, ...]]:
    """The ranking of an accuracy check as text rows (ACCURACY_COLUMNS); "vs yours" is the mean error
    difference to your settings (negative: better)."""
    yours = next((row["error_mean_voxels"] for row in ranking if row["candidate"] == "yours"), None)
    rows = []
    for row in ranking:
        versus = ("—" if yours is None else "yours" if row["candidate"] == "yours" else
                  f"{row['error_mean_voxels'] - yours:+.3g}" + (" (tie)" if row.get("tied_with_best") else ""))
        rows.append((str(row["rank"]), row["description"], f"{row['error_mean_voxels']:.3g}",
                     f"{row['error_worst_voxels']:.3g}", f"{row['time_mean_s']:.3g}", versus))
    return rows


def ranking_text(rows) -> str:
    """The ranking rows as an aligned plain-text table (the panel shows it in a read-only text box)."""
    if not rows:
        return ""
    table = [ACCURACY_COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(ACCURACY_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table)


def recommendation_label(recommendation: dict) -> str:
    """A short label of an appliable recommendation: its kind and the settings it changes."""
    changes = ", ".join(f"{name} = {value}" for name, value in recommendation["changes"].items())
    return f"{recommendation['kind']}: {changes}"


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
        self.resultPage = None  # Path of the result page (result_page.py) of the registration shown, if it has one
        self.study = None  # {"store", "analysis", "reportPaths", "nodes"} of the last study with a report
        self.accuracyJob = None
        self._accuracyCandidates: list[str] = []  # names of the running check's candidates, in run order
        self.accuracyStatus = ""
        self.accuracyProgress = 0.0
        self.accuracy = None  # the accuracy.CheckOutcome of the last check
        self.accuracyRanking: list[tuple[str, ...]] = []  # rows of ACCURACY_COLUMNS
        self.recommendations: list[dict] = []  # {"kind", "text", "changes"} of the last check, in advice order
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
    def accuracyRunning(self) -> bool:
        return self.accuracyJob is not None

    @property
    def appliableRecommendations(self) -> list[tuple[int, str]]:
        """(index into ``recommendations``, label) of the recommendations that change settings."""
        return [(i, recommendation_label(r)) for i, r in enumerate(self.recommendations) if r["changes"]]

    @property
    def rankingText(self) -> str:
        return ranking_text(self.accuracyRanking)

    @property
    def adviceText(self) -> str:
        return "\n\n".join(f"- {r['text']}" for r in self.recommendations)

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
                          outputTableNode=None, maskNode=None, initialTransformNode=None) -> bool:
        """Start a registration in a child process; False (and ``error``) when it cannot start. ``maskNode`` and
        ``initialTransformNode`` (optional): see RegistrationLogic.startRegistration."""
        if self.registrationRunning:
            return False
        folder = self._jobFolder("registration")
        try:
            job = self.logic.startRegistration(fixedVolumeNode, movingVolumeNode, settings, jobFolder=folder,
                                               maskNode=maskNode, initialTransformNode=initialTransformNode)
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
        self.resultPage = self.logic.resultPageOfTableNode(tableNode)
        self.showGridSummary(result.grid)
        self.status = f"Finished: {STOP_REASON_TEXT.get(result.stop_reason, result.stop_reason)}."

    def showDiagnosisTable(self, tableNode):
        """Show the warnings and the result page of the registration a diagnosis table describes (None: nothing)."""
        self.warnings = self.logic.warningsFromTableNode(tableNode) if tableNode is not None else []
        self.resultPage = self.logic.resultPageOfTableNode(tableNode)

    # --- study ----------------------------------------------------------------------------------------------------

    def startStudy(self, fixedVolumeNode, movingVolumeNode, spec, folder, executor="pool", maskNode=None,
                   initialTransformNode=None) -> bool:
        """Start (or resume) a study in a child process; False (and ``error``) when it cannot start. ``maskNode``
        and ``initialTransformNode`` (optional, as for a registration) are stored with the study for every run:
        see RegistrationLogic.startStudy."""
        if self.studyRunning:
            return False
        jobFolder = self._jobFolder("study")
        try:
            job = self.logic.startStudy(fixedVolumeNode, movingVolumeNode, spec, folder, executor=executor,
                                       jobFolder=jobFolder, maskNode=maskNode,
                                       initialTransformNode=initialTransformNode)
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

    # --- accuracy check -------------------------------------------------------------------------------------------

    def startAccuracyCheck(self, fixedVolumeNode, settings, outputFolder=None, candidates=None, seeds=4,
                           executor="pool") -> bool:
        """Start the accuracy check of ``settings`` on the fixed volume in a child process (logic.startAccuracyCheck:
        candidates ranked by their error against a known deformation); False (and ``error``) when it cannot."""
        if self.accuracyRunning:
            return False
        jobFolder = self._jobFolder("accuracy")
        try:
            if fixedVolumeNode is None:
                raise ValueError("choose a fixed volume: the check deforms it by a known deformation")
            names = [c.name for c in resolve_candidates(candidates, self.logic.settingsFrom(settings),
                                                        self.logic.geometryImageFromVolumeNode(fixedVolumeNode))]
            job = self.logic.startAccuracyCheck(fixedVolumeNode, settings, outputFolder, candidates=candidates,
                                                seeds=seeds, executor=executor, jobFolder=jobFolder)
        except Exception as error:  # noqa: BLE001 - shown to the user
            self._discard(jobFolder)
            self.fail("Cannot start the accuracy check", error)
            return False
        self.accuracyJob = job
        self._accuracyCandidates = names
        self.clearError()
        self.accuracyProgress = 0.0
        self.accuracyStatus = "Starting the accuracy check..."
        return True

    def cancelAccuracyCheck(self):
        if self.accuracyJob is not None:
            self.accuracyJob.cancel()
            self.accuracyStatus = "Cancelling (finished runs are ranked)..."

    def _onAccuracyEvent(self, event):
        kind = event["event"]
        if kind == "run":  # done/total count the runs of one candidate; the candidates run in order
            names = self._accuracyCandidates
            position = names.index(event["candidate"]) if event["candidate"] in names else 0
            self.accuracyProgress = min(1.0, (position + event["done"] / max(1, event["total"])) / len(names))
            self.accuracyStatus = (f"candidate {position + 1}/{len(names)} ({event['candidate']}): "
                                   f"{event['done']}/{event['total']} runs")
        elif kind == "end":
            job, self.accuracyJob = self.accuracyJob, None
            self._finishAccuracyCheck(job)
            self._ended(job)

    def _finishAccuracyCheck(self, job):
        if job.state == FAILED:
            self.accuracyStatus = "Accuracy check failed."
            self.fail("Accuracy check failed", job.error, job.log_tail())
            return
        if job.result is None:
            self.accuracyStatus = "Cancelled before any run finished: nothing to rank."
            return
        try:
            outcome = job.accuracy_result()
        except Exception as error:  # noqa: BLE001 - shown to the user
            self.accuracyStatus = "Accuracy check failed."
            self.fail("Failed to read the accuracy check", error)
            return
        self.accuracy = outcome
        self.accuracyRanking = accuracy_rows(outcome.ranking)
        self.recommendations = [{"kind": r.kind, "text": r.text, "changes": dict(r.changes)}
                                for r in outcome.recommendations]
        cancelled = " (cancelled: the finished runs are ranked)" if outcome.cancelled else ""
        self.accuracyProgress = 1.0
        where = outcome.paths.get("html", outcome.folder)
        self.accuracyStatus = f"{len(outcome.ranking)} candidates ranked; page: {where}{cancelled}"

    def applyRecommendation(self, index: int, parameterValues: dict) -> dict:
        """The panel's parameters (name: value) that recommendation ``index`` changes, with their new values
        (logic.applyRecommendation); the front end writes them to its parameter node or state."""
        applied = self.logic.applyRecommendation(parameterValues, self.recommendations[index])
        changed = {name: value for name, value in applied.items() if parameterValues.get(name) != value}
        self.status = f"Applied: {recommendation_label(self.recommendations[index])}."
        return changed

    # --- polling --------------------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Handle the events of the running jobs (nodes are made here, on the caller's thread); True if any."""
        events = 0
        for job, handle in ((self.registrationJob, self._onRegistrationEvent), (self.studyJob, self._onStudyEvent),
                            (self.accuracyJob, self._onAccuracyEvent)):
            if job is None:
                continue
            for event in job.poll():
                events += 1
                handle(event)
                if event["event"] == "warning":
                    log.warning("%s", event["text"])
        return events > 0
