"""SpacingRegistration web front end on trame-slicer.

The browser gets slice and 3D views rendered by Slicer (slicer-core displayable managers, offscreen EGL, streamed
by trame-rca) and a panel with the desktop module's settings. Every action calls the module logic
(SpacingRegistrationLogic) and the library: this file only turns browser fields into parameter values and MRML
nodes into browser state. Long work (registration, study) runs in the module's BackgroundJob worker thread; the
asyncio loop polls it and creates the MRML outputs on the main thread, as the desktop panel's timer does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import sys
import tempfile
import time
import traceback

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen rendering, no display

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULE_DIRECTORY = PROJECT_ROOT / "SpacingRegistration"
if str(MODULE_DIRECTORY) not in sys.path:
    sys.path.insert(0, str(MODULE_DIRECTORY))

from SpacingRegistration import (  # noqa: E402  (the module file imports headless)
    SETTING_PARAMETERS,
    STUDY_MODE_PARAMETERS,
    BackgroundJob,
    SpacingRegistrationLogic,
    computeStudyInWorker,
    expectedIterations,
    parameterValuesFromSettings,
    settingsFromParameterValues,
    studySpecFromParameterValues,
)
from SpacingRegistrationLib import sample_data, svg  # noqa: E402
from SpacingRegistrationLib.diagnostics import STOP_REASON_TEXT  # noqa: E402
from SpacingRegistrationLib.settings import SCALES_ESTIMATORS, RegistrationSettings, SettingsError  # noqa: E402

log = logging.getLogger("SpacingRegistrationWeb")

#: Seconds between two polls of a running job by the server's event loop.
POLL_SECONDS = 0.2
#: Panel fields -> parameter names of the desktop panel (SpacingRegistration.SETTING_PARAMETERS).
FIELD_PARAMETERS = {
    "mesh_x": "meshSizeX", "mesh_y": "meshSizeY", "mesh_z": "meshSizeZ",
    "sampling_percentage": "samplingPercentage", "sampling_seed": "samplingSeed",
    "scales_estimator": "scalesEstimator", "reproducible": "reproducible", "normalised_units": "normalisedUnits",
    "spacing_override": "spacingOverride",
}
#: Iteration limit parameter of each optimizer (the "iterations" field sets the chosen optimizer's).
ITERATION_PARAMETERS = {"lbfgs2": "lbfgs2NumberOfIterations", "lbfgsb": "lbfgsbNumberOfIterations",
                        "gradient_descent": "gradientDescentNumberOfIterations"}
INTEGER_FIELDS = ("mesh_x", "mesh_y", "mesh_z", "sampling_seed", "iterations")
FLOAT_FIELDS = ("sampling_percentage", "spacing_override")
STUDY_MODES = tuple(STUDY_MODE_PARAMETERS.values())
SAMPLE_VOXEL_MM = 4.0


def _number(field: str, value, kind):
    if isinstance(value, bool):
        raise SettingsError(f"{field} must be a number, got {value!r}")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingsError(f"{field} must be a number, got {value!r}") from None
    if kind is int:
        if number != int(number):
            raise SettingsError(f"{field} must be an integer, got {value!r}")
        return int(number)
    return number


def parameterValuesFromFields(fields: dict) -> dict:
    """Desktop-panel parameter values from the browser fields (plus the 'advanced' JSON object of parameters).

    Raises SettingsError with a message for the browser when a field does not parse.
    """
    values = {}
    for field, name in FIELD_PARAMETERS.items():
        value = fields[field]
        if field in INTEGER_FIELDS:
            value = _number(field, value, int)
        elif field in FLOAT_FIELDS:
            value = _number(field, value, float)
        values[name] = value
    advanced = str(fields.get("advanced_json") or "").strip()
    if advanced:
        try:
            extra = json.loads(advanced)
        except json.JSONDecodeError as error:
            raise SettingsError(f"advanced settings are not valid JSON: {error}") from None
        if not isinstance(extra, dict):
            raise SettingsError("advanced settings must be a JSON object of parameter names and values")
        unknown = sorted(set(extra) - set(SETTING_PARAMETERS))
        if unknown:
            raise SettingsError(f"unknown advanced parameters {unknown}; known: {sorted(SETTING_PARAMETERS)}")
        values.update(extra)
    optimizer = values.get("optimizer", RegistrationSettings().optimizer)
    if optimizer in ITERATION_PARAMETERS and ITERATION_PARAMETERS[optimizer] not in (extra if advanced else {}):
        values[ITERATION_PARAMETERS[optimizer]] = _number("iterations", fields["iterations"], int)
    return values


def tableItems(tableNode) -> tuple[list, list]:
    """(headers, items) of a vtkMRMLTableNode for a VDataTable."""
    columns = [tableNode.GetColumnName(c) or f"column {c}" for c in range(tableNode.GetNumberOfColumns())]
    keys = [f"c{c}" for c in range(len(columns))]
    headers = [{"title": name, "key": key} for name, key in zip(columns, keys)]
    items = [{key: tableNode.GetCellText(r, c) for c, key in enumerate(keys)}
             for r in range(tableNode.GetNumberOfRows())]
    return headers, items


def chartSvg(chartNode) -> str:
    """SVG line chart (SpacingRegistrationLib.svg) of a vtkMRMLPlotChartNode's series."""
    series = {}
    for n in range(chartNode.GetNumberOfPlotSeriesNodes()):
        seriesNode = chartNode.GetNthPlotSeriesNode(n)
        table = seriesNode.GetTableNode().GetTable()
        xs, ys = table.GetColumnByName(seriesNode.GetXColumnName()), table.GetColumnByName(seriesNode.GetYColumnName())
        series[seriesNode.GetYColumnName()] = ([xs.GetValue(i) for i in range(xs.GetNumberOfTuples())],
                                               [ys.GetValue(i) for i in range(ys.GetNumberOfTuples())])
    return svg.line_chart(series, chartNode.GetTitle(), chartNode.GetXAxisTitle(), chartNode.GetYAxisTitle(),
                          markers=True)


def samplePairPaths(cacheDir) -> list[pathlib.Path]:
    """fixed.nrrd and moving.nrrd of the bundled PET-like pair (MNI152 at 4 mm), written once into the cache."""
    folder = pathlib.Path(cacheDir) / f"pet_like_{SAMPLE_VOXEL_MM:g}mm"
    paths = [folder / "fixed.nrrd", folder / "moving.nrrd"]
    if not all(p.is_file() for p in paths):
        maps = sample_data.fetch_mni152(cacheDir)
        pair = sample_data.make_pet_like_pair(maps["gm"], maps["wm"], voxel_size_mm=SAMPLE_VOXEL_MM)
        sample_data.write_pair(pair, folder)
    return paths


class SpacingRegistrationWebApp:
    """The trame application: a trame-slicer SlicerApp (scene, views) driven by SpacingRegistrationLogic."""

    def __init__(self, server=None, outputDir=None, cacheDir=None, volumePaths=(), loadSample=True):
        from trame.app import get_server
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_rca.encoders.image_encoder import RcaImageEncoder

        self.server = server if server is not None else get_server(client_type="vue3")
        self.state, self.ctrl = self.server.state, self.server.controller
        self.outputDir = pathlib.Path(outputDir or tempfile.mkdtemp(prefix="spacingreg-web-")).resolve()
        self.outputDir.mkdir(parents=True, exist_ok=True)
        self.cacheDir = pathlib.Path(cacheDir) if cacheDir else sample_data.default_cache_dir()
        self.server.enable_module({"serve": {"results": str(self.outputDir)}})

        self.slicerApp = SlicerApp()
        # PNG frames: the views reach the browser without compression artefacts (the grid colours stay exact).
        register_rca_factories(self.slicerApp.view_manager, self.server, rca_encoder=RcaImageEncoder.PNG)
        self.layoutManager = LayoutManager(self.slicerApp.scene, self.slicerApp.view_manager, self.server)
        self.layoutManager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layoutManager.set_layout("Axial Primary")
        self.scene = self.slicerApp.scene
        self.logic = SpacingRegistrationLogic(scene=self.scene)

        self._job = None
        self._studyJob = None
        self._jobInputs = None
        self._studyCount = 0
        self._initialState(loadSample)
        self._buildUi()
        if volumePaths:
            self.loadPaths([str(p) for p in volumePaths])
        elif loadSample:
            self.ctrl.on_server_ready.add(lambda **_: asyncio.get_event_loop().create_task(self.loadSample()))

    # --- state ----------------------------------------------------------------------------------------------------

    def _initialState(self, loadSample):
        defaults = parameterValuesFromSettings(RegistrationSettings())
        s = self.state
        s.volumes = []
        s.fixed_id = None
        s.moving_id = None
        s.paths_text = ""
        s.upload_files = None
        for field, name in FIELD_PARAMETERS.items():
            s[field] = defaults[name]
        s.iterations = defaults["lbfgs2NumberOfIterations"]
        s.scales_estimators = list(SCALES_ESTIMATORS)
        s.advanced_json = ""
        s.study_spacings = "1 4 10"
        s.study_repeats = 2
        s.study_modes = ["native-default", "normalised-reproducible"]
        s.study_mode_items = list(STUDY_MODES)
        s.busy = False
        s.study_busy = False
        s.progress = 0
        s.study_progress = 0
        s.status = "Loading the sample pair..." if loadSample else "Load volumes to start."
        s.study_status = ""
        s.error_message = ""
        s.grid_summary = ""
        s.grid_warnings = ""
        s.diagnosis = []
        s.warnings_text = ""
        s.study_group_headers = []
        s.study_groups = []
        s.study_run_headers = []
        s.study_runs = []
        s.plots = []
        s.report_url = ""
        s.study_statements = ""

    def _fail(self, message: str, error: BaseException | None = None):
        if error is not None and not isinstance(error, (SettingsError, ValueError)):
            log.error("%s\n%s", message, traceback.format_exc())
        self.state.error_message = message
        self.state.flush()

    def _nodeById(self, nodeId):
        return self.scene.GetNodeByID(nodeId) if nodeId else None

    def _inputs(self):
        fixed, moving = self._nodeById(self.state.fixed_id), self._nodeById(self.state.moving_id)
        if fixed is None:
            raise ValueError("Choose a fixed volume.")
        if moving is None:
            raise ValueError("Choose a moving volume.")
        return fixed, moving

    def _settingsAndValues(self):
        values = parameterValuesFromFields({k: self.state[k] for k in (*FIELD_PARAMETERS, "iterations", "advanced_json")})
        return settingsFromParameterValues(values), values

    # --- volumes --------------------------------------------------------------------------------------------------

    def _refreshVolumeList(self):
        nodes = [self.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                 for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        self.state.volumes = [{"title": n.GetName(), "value": n.GetID()} for n in nodes
                              if n.GetAttribute("SpacingRegistration.Web.Input") == "1"]

    def loadPaths(self, paths) -> list:
        """Load volume files into the scene; the first two loaded become fixed and moving. Messages, not crashes."""
        loaded, failures = [], []
        for path in paths:
            path = str(path).strip()
            if not path:
                continue
            if not pathlib.Path(path).is_file():
                failures.append(f"{path}: no such file")
                continue
            name = self.scene.GenerateUniqueName(pathlib.Path(path).name.split(".")[0] or "volume")
            node = self.slicerApp.volumes_logic.AddArchetypeVolume(path, name)
            if node is None or node.GetImageData() is None or not node.IsA("vtkMRMLScalarVolumeNode"):
                if node is not None:
                    self.scene.RemoveNode(node)
                failures.append(f"{path}: not a readable scalar volume")
                continue
            node.SetAttribute("SpacingRegistration.Web.Input", "1")
            loaded.append(node)
        self._refreshVolumeList()
        if loaded:
            if len(loaded) >= 2:
                self.state.fixed_id, self.state.moving_id = loaded[0].GetID(), loaded[1].GetID()
            elif self.state.fixed_id is None:
                self.state.fixed_id = loaded[0].GetID()
            self._showFixed()
            self.state.status = f"Loaded {', '.join(n.GetName() for n in loaded)}."
        if failures:
            self.state.error_message = "Could not load: " + "; ".join(failures)
        elif loaded:
            self.state.error_message = ""
        self.state.flush()
        return loaded

    def _showFixed(self, resetViews=True):
        fixed = self._nodeById(self.state.fixed_id)
        display = self.slicerApp.display_manager
        display.show_volume_in_slice_background(fixed)
        display.show_volume_in_slice_foreground(None)
        if resetViews:
            display.reset_views()

    async def loadSample(self):
        self.state.status = "Preparing the sample pair (MNI152-derived PET-like pair at 4 mm)..."
        self.state.flush()
        try:
            paths = await asyncio.to_thread(samplePairPaths, self.cacheDir)
        except Exception as error:  # noqa: BLE001 - shown in the browser
            self._fail(f"The sample pair could not be prepared: {error}", error)
            return
        self.loadPaths(paths)

    def onLoadPaths(self):
        text = str(self.state.paths_text or "")
        paths = [p for p in text.replace(";", "\n").splitlines() if p.strip()]
        if not paths:
            self._fail("Type the path of one or more volume files (one per line).")
            return
        self.loadPaths(paths)

    def onUpload(self, files):
        from trame_slicer.utils import write_client_files_to_dir

        if not files:
            return
        folder = pathlib.Path(tempfile.mkdtemp(prefix="upload-", dir=self.outputDir))
        try:
            paths = sorted(write_client_files_to_dir(files, folder))
        except Exception as error:  # noqa: BLE001
            self._fail(f"The upload failed: {error}", error)
            return
        self.loadPaths(paths)

    def onFixedChanged(self, fixed_id=None, **_):
        if self._nodeById(fixed_id) is not None:
            self._showFixed(resetViews=False)

    # --- control grid ---------------------------------------------------------------------------------------------

    def onShowGrid(self):
        try:
            settings, _values = self._settingsAndValues()
            fixed = self._nodeById(self.state.fixed_id)
            if fixed is None:
                raise ValueError("Choose a fixed volume: the grid is drawn over it.")
            _nodes, geometry = self.logic.showControlGrid(fixed, settings=settings)
        except Exception as error:  # noqa: BLE001 - shown in the browser
            self._fail(f"Cannot show the grid: {error}", error)
            return
        self._showGridSummary(geometry)
        self.state.error_message = ""
        self.state.status = "Grid shown."
        self.state.flush()

    def onHideGrid(self):
        count = self.logic.hideControlGrid(scene=self.scene)
        self.state.grid_summary = ""
        self.state.grid_warnings = ""
        self.state.status = f"Grid hidden ({count} models removed)."

    def _showGridSummary(self, geometry):
        self.state.grid_summary = (
            f"{geometry.inside_count} control points inside the image, {geometry.outside_count} outside "
            f"({list(geometry.points_per_axis)} per axis); image inside the transform domain: {geometry.coverage:.0%}")
        self.state.grid_warnings = "\n".join(geometry.warnings)

    # --- registration ---------------------------------------------------------------------------------------------

    def onRegister(self):
        if self._job is not None:
            self._job.cancel()
            self.state.status = "Cancelling..."
            return
        try:
            settings, _values = self._settingsAndValues()
            fixed, moving = self._inputs()
            fixedImage, movingImage = self.logic.imagesFromVolumeNodes(fixed, moving)
        except Exception as error:  # noqa: BLE001
            self._fail(f"Cannot start the registration: {error}", error)
            return
        self.state.error_message = ""
        self._jobInputs = (fixed, moving)
        self._expected = expectedIterations(settings)
        self._job = BackgroundJob(SpacingRegistrationLogic.computeRegistration, fixedImage, movingImage,
                                  settings).start()
        self.state.busy = True
        self.state.progress = 0
        self.state.status = "Initialising..."
        asyncio.get_event_loop().create_task(self._pollRegistration())

    async def _pollRegistration(self):
        job = self._job
        while not job.done:
            await asyncio.sleep(POLL_SECONDS)
            record = job.lastProgress
            if record is not None:
                with self.state:
                    self.state.progress = (100.0 * job.progressCount / max(self._expected, job.progressCount)
                                           if self._expected else -1)
                    self.state.status = (f"iteration {record.iteration} (libLBFGS run {record.lbfgs_run + 1}), "
                                         f"metric {record.metric:.6g}, step {record.step_max_voxels:.3g} voxels")
        self._job = None
        fixed, moving = self._jobInputs
        with self.state:
            self.state.busy = False
            self.state.progress = 100
            if job.error is not None:
                self.state.status = "Registration failed."
                self.state.error_message = f"Registration failed: {job.error}"
                log.error(job.errorTraceback)
                return
            try:
                _transformNode, tableNode = self.logic.createOutputNodes(job.result, fixedVolumeNode=fixed,
                                                                         movingVolumeNode=moving)
            except Exception as error:  # noqa: BLE001
                self._fail(f"Failed to create the output nodes: {error}", error)
                return
            result = job.result
            self.state.diagnosis = [{"name": n, "value": v} for n, v in self.logic.diagnosisFromTableNode(tableNode)]
            warnings = self.logic.warningsFromTableNode(tableNode)
            self.state.warnings_text = "\n".join(f"- {w}" for w in warnings) or "No warnings."
            self._showGridSummary(result.grid)
            self.state.status = ("Cancelled: partial result." if result.cancelled else
                                 f"Finished: {STOP_REASON_TEXT.get(result.stop_reason, result.stop_reason)}.")

    # --- study ----------------------------------------------------------------------------------------------------

    def onRunStudy(self):
        if self._studyJob is not None:
            self._studyJob.cancel()
            self.state.study_status = "Cancelling (finished runs are kept)..."
            return
        try:
            settings, values = self._settingsAndValues()
            modes = list(self.state.study_modes or [])
            if not modes:
                raise ValueError("Choose at least one study mode.")
            values.update({"studySpacings": str(self.state.study_spacings),
                           "studyRepeats": _number("repeats", self.state.study_repeats, int)})
            values.update({name: mode in modes for name, mode in STUDY_MODE_PARAMETERS.items()})
            spec = studySpecFromParameterValues(values, settings)
            if spec.repeats < 1:
                raise ValueError("repeats must be at least 1")
            fixed, moving = self._inputs()
            fixedImage, movingImage = self.logic.imagesFromVolumeNodes(fixed, moving)
        except Exception as error:  # noqa: BLE001
            self._fail(f"Cannot start the study: {error}", error)
            return
        self._studyCount += 1
        folder = self.outputDir / f"study-{time.strftime('%Y%m%d-%H%M%S')}-{self._studyCount}"
        self._studyTotal = len(spec.runs())
        self._studyFolder = folder
        self.state.error_message = ""
        self.state.study_busy = True
        self.state.study_progress = 0
        self.state.study_status = f"Starting the study ({self._studyTotal} runs) in {folder}..."
        self._studyJob = BackgroundJob(computeStudyInWorker, fixedImage, movingImage, spec, str(folder)).start()
        asyncio.get_event_loop().create_task(self._pollStudy())

    async def _pollStudy(self):
        job = self._studyJob
        while not job.done:
            await asyncio.sleep(POLL_SECONDS)
            if job.lastProgress is not None:
                done, total, row = job.lastProgress
                with self.state:
                    self.state.study_progress = 100.0 * done / max(1, total)
                    self.state.study_status = f"{done}/{total} runs ({row['run_id']})"
        self._studyJob = None
        with self.state:
            self.state.study_busy = False
            if job.error is not None:
                self.state.study_status = "Study failed."
                self.state.error_message = f"Study failed: {job.error}"
                log.error(job.errorTraceback)
                return
            outcome, analysis, reportPaths = job.result
            if analysis is None:
                self.state.study_status = "No run finished." + (" (cancelled)" if outcome.cancelled else "")
                return
            try:
                nodes = self.logic.createStudyNodes(outcome.store, analysis, reportPaths, scene=self.scene)
                self.state.study_group_headers, self.state.study_groups = tableItems(nodes["groups"])
                self.state.study_run_headers, self.state.study_runs = tableItems(nodes["runs"])
                self.state.plots = [chartSvg(chart) for chart in nodes["charts"]]
            except Exception as error:  # noqa: BLE001
                self._fail(f"Failed to show the study: {error}", error)
                return
            relative = pathlib.Path(reportPaths["html"]).resolve().relative_to(self.outputDir)
            self.state.report_url = f"results/{relative.as_posix()}"
            self.state.study_statements = "\n".join(f"- {s['text']}" for s in analysis.statements)
            self.state.study_progress = 100
            self.state.study_status = (f"{len(outcome.store.rows)} runs; report: {reportPaths['html']}"
                                       + (" (cancelled: finished runs kept)" if outcome.cancelled else ""))

    # --- UI -------------------------------------------------------------------------------------------------------

    def _buildUi(self):
        from trame.widgets import client, html
        from trame.widgets import vuetify3 as v
        from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

        self.state.change("fixed_id")(self.onFixedChanged)
        with SinglePageWithDrawerLayout(self.server, full_height=True) as layout:
            self.ui = layout
            client.Style("html { overflow-y: auto; }"
                         " .sr-pre { white-space: pre-wrap; font-size: 0.8rem; }")
            layout.title.set_text("SpacingRegistration")
            layout.drawer.width = 430
            with layout.drawer:
                with html.Div(classes="pa-2"):
                    v.VAlert(v_if="error_message", type="error", density="compact", closable=True,
                             text=("error_message",), id="error-message", classes="mb-2",
                             click_close="error_message = ''")
                    html.Div("{{ status }}", id="status", classes="text-body-2 mb-1")
                    v.VProgressLinear(v_if="busy", model_value=("progress",), indeterminate=("progress < 0",),
                                      height=6, classes="mb-2", id="progress")
                    with v.VExpansionPanels(multiple=True, model_value=("panels", [0, 1, 2, 3])):
                        self._inputsPanel(v, html)
                        self._settingsPanel(v, html)
                        self._studyPanel(v, html)
                        self._advancedPanel(v, html)
            with layout.content:
                with html.Div(style="height: 62vh; position: relative;", id="views"):
                    self.layoutManager.initialize_layout_grid(layout)
                self._resultsArea(v, html)

    def _inputsPanel(self, v, html):
        with v.VExpansionPanel(title="Inputs"):
            with v.VExpansionPanelText():
                v.VSelect(label="Fixed volume", v_model=("fixed_id",), items=("volumes",), id="fixed-select",
                          density="compact", clearable=True)
                v.VSelect(label="Moving volume", v_model=("moving_id",), items=("volumes",), id="moving-select",
                          density="compact", clearable=True)
                v.VTextarea(label="Volume file paths on the server (one per line)", v_model=("paths_text",),
                            rows=2, density="compact", id="paths-text")
                with html.Div(classes="d-flex flex-wrap ga-2"):
                    v.VBtn("Load files", click=self.onLoadPaths, id="load-paths", size="small")
                    v.VBtn("Load sample pair", click=self.loadSample, id="load-sample", size="small")
                v.VFileInput(label="Upload volumes", multiple=True, density="compact", classes="mt-2",
                             id="upload", change=(f"trigger('{self.ctrl.trigger_name(self.onUpload)}', "
                                                  "[$event.target.files])"))

    def _settingsPanel(self, v, html):
        with v.VExpansionPanel(title="Control grid and registration"):
            with v.VExpansionPanelText():
                with html.Div(classes="d-flex ga-2"):
                    for axis in "xyz":
                        v.VTextField(label=f"mesh {axis}", v_model=(f"mesh_{axis}",), type="number",
                                     density="compact", id=f"mesh-{axis}")
                with html.Div(classes="d-flex ga-2"):
                    v.VTextField(label="sampling %", v_model=("sampling_percentage",), type="number",
                                 density="compact", id="sampling-percentage")
                    v.VTextField(label="seed (-1: wall clock)", v_model=("sampling_seed",), type="number",
                                 density="compact", id="sampling-seed")
                with html.Div(classes="d-flex ga-2"):
                    v.VSelect(label="scales estimator", v_model=("scales_estimator",), items=("scales_estimators",),
                              density="compact", id="scales-estimator")
                    v.VTextField(label="iterations", v_model=("iterations",), type="number", density="compact",
                                 id="iterations")
                v.VTextField(label="spacing override mm (0: off)", v_model=("spacing_override",), type="number",
                             density="compact", id="spacing-override")
                with html.Div(classes="d-flex ga-4"):
                    v.VCheckbox(label="reproducible", v_model=("reproducible",), density="compact",
                                id="reproducible", hide_details=True)
                    v.VCheckbox(label="normalised units", v_model=("normalised_units",), density="compact",
                                id="normalised-units", hide_details=True)
                with html.Div(classes="d-flex flex-wrap ga-2 mt-2"):
                    v.VBtn("Show grid", click=self.onShowGrid, id="show-grid", size="small", color="primary")
                    v.VBtn("Hide grid", click=self.onHideGrid, id="hide-grid", size="small")
                    v.VBtn("{{ busy ? 'Cancel registration' : 'Run registration' }}", click=self.onRegister,
                           id="run-registration", size="small", color=("busy ? 'warning' : 'primary'",))
                html.Div("{{ grid_summary }}", id="grid-summary", classes="text-caption mt-2")
                html.Div("{{ grid_warnings }}", classes="text-caption text-warning sr-pre")

    def _studyPanel(self, v, html):
        with v.VExpansionPanel(title="Study"):
            with v.VExpansionPanelText():
                with html.Div(classes="d-flex ga-2"):
                    v.VTextField(label="spacings (mm)", v_model=("study_spacings",), density="compact",
                                 id="study-spacings")
                    v.VTextField(label="repeats", v_model=("study_repeats",), type="number", density="compact",
                                 id="study-repeats")
                v.VSelect(label="modes", v_model=("study_modes",), items=("study_mode_items",), multiple=True,
                          chips=True, density="compact", id="study-modes")
                v.VBtn("{{ study_busy ? 'Cancel study' : 'Run study' }}", click=self.onRunStudy, id="run-study",
                       size="small", color=("study_busy ? 'warning' : 'primary'",))
                v.VProgressLinear(v_if="study_busy", model_value=("study_progress",), height=6, classes="mt-2",
                                  id="study-progress")
                html.Div("{{ study_status }}", id="study-status", classes="text-caption mt-1 sr-pre")

    def _advancedPanel(self, v, html):
        with v.VExpansionPanel(title="Advanced"):
            with v.VExpansionPanelText():
                v.VTextarea(label="advanced settings (JSON object of panel parameters)", v_model=("advanced_json",),
                            rows=3, density="compact", id="advanced-json",
                            placeholder='{"histogramBins": 32, "optimizer": "lbfgsb", "numberOfThreads": 1}')
                html.Div("Parameter names: " + ", ".join(sorted(SETTING_PARAMETERS)), classes="text-caption")

    def _resultsArea(self, v, html):
        with html.Div(classes="pa-3", id="results"):
            with html.Div(v_if="diagnosis.length"):
                html.H3("Registration diagnosis")
                v.VDataTable(items=("diagnosis",), headers=("[{title: 'Name', key: 'name'}, "
                                                            "{title: 'Value', key: 'value'}]",),
                             density="compact", items_per_page=-1, id="diagnosis-table", hide_default_footer=True)
                html.Div("{{ warnings_text }}", classes="sr-pre text-warning")
            with html.Div(v_if="study_groups.length", id="study-results"):
                html.H3("Study per spacing and mode")
                v.VDataTable(items=("study_groups",), headers=("study_group_headers",), density="compact",
                             items_per_page=-1, id="study-groups-table", hide_default_footer=True)
                html.A("Open the report", href=("report_url",), target="_blank", id="report-link",
                       v_if="report_url")
                html.Div("{{ study_statements }}", classes="sr-pre mt-2")
                with html.Div(classes="d-flex flex-wrap ga-2 mt-2"):
                    html.Div(v_for="(plot, i) in plots", key="i", v_html="plot", classes="sr-svg",
                             )
                html.H3("Study runs")
                v.VDataTable(items=("study_runs",), headers=("study_run_headers",), density="compact",
                             items_per_page=-1, id="study-runs-table", hide_default_footer=True)


def parseArguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m SpacingRegistrationWeb",
                                     description="Serve the SpacingRegistration web front end (trame-slicer).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--output-dir", default=None, help="folder for studies and uploads (default: a new temp folder)")
    parser.add_argument("--cache-dir", default=None, help="cache of the sample data (default $SPACINGREG_CACHE or "
                                                          "~/.cache/SpacingRegistration)")
    parser.add_argument("--no-sample", action="store_true", help="do not load the bundled sample pair at start")
    parser.add_argument("volumes", nargs="*", help="volume files to load (first fixed, second moving)")
    return parser.parse_args(argv)


def main(argv=None):
    options = parseArguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    app = SpacingRegistrationWebApp(outputDir=options.output_dir, cacheDir=options.cache_dir,
                                    volumePaths=options.volumes, loadSample=not options.no_sample)
    # trame's own command-line parser reads sys.argv too: keep it to the options it knows.
    sys.argv = sys.argv[:1]
    app.server.start(host=options.host, port=options.port, open_browser=False, timeout=0)


if __name__ == "__main__":
    main()
