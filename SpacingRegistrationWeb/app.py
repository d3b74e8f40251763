"""SpacingRegistration web front end on trame-slicer.

The browser gets slice and 3D views rendered by Slicer (slicer-core displayable managers, offscreen EGL, streamed
by trame-rca) and a panel with the desktop module's settings. The page only binds, as the desktop panel does, the
library's workflow.Workflow: it starts registrations, studies and accuracy checks as child-process jobs through the
module's logic (SpacingRegistrationLib.mrml.logic.RegistrationLogic), owns the texts shown, and makes the MRML nodes
when the asyncio loop polls it. The form's fields, labels and ranges come from the settings' metadata (parameters.py).
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

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen rendering, no display

from SpacingRegistrationLib import parameters, sample_data, svg  # noqa: E402
from SpacingRegistrationLib.images import InputImageError, check_image_file  # noqa: E402
from SpacingRegistrationLib.mrml.logic import RegistrationLogic  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings, SettingsError  # noqa: E402
from SpacingRegistrationLib.workflow import ACCURACY_COLUMNS, POLL_SECONDS, Workflow  # noqa: E402

from SpacingRegistrationWeb import safety  # noqa: E402

log = logging.getLogger("SpacingRegistrationWeb")

#: Panel parameters shown as form fields (the others through the advanced JSON field).
FORM_PARAMETERS = ("meshSizeX", "meshSizeY", "meshSizeZ", "samplingPercentage", "samplingSeed", "scalesEstimator",
                   "lbfgs2NumberOfIterations", "spacingOverride", "reproducible", "normalisedUnits")
FORM_FIELDS = {f.name: f for f in parameters.parameter_fields() if f.name in FORM_PARAMETERS}
STUDY_MODES = tuple(parameters.STUDY_MODE_PARAMETERS.values())
SAMPLE_VOXEL_MM = 4.0


def parameterValuesFromFields(fields: dict) -> dict:
    """Panel parameter values from the form fields (plus the 'advanced_json' object of parameters).

    Raises SettingsError with a message for the browser when a field does not parse.
    """
    values = {name: parameters.parse_parameter_value(field, fields[name]) for name, field in FORM_FIELDS.items()}
    advanced = str(fields.get("advanced_json") or "").strip()
    if advanced:
        try:
            extra = json.loads(advanced)
        except json.JSONDecodeError as error:
            raise SettingsError(f"advanced settings are not valid JSON: {error}") from None
        if not isinstance(extra, dict):
            raise SettingsError("advanced settings must be a JSON object of parameter names and values")
        unknown = sorted(set(extra) - set(parameters.SETTING_PARAMETERS))
        if unknown:
            raise SettingsError(f"unknown advanced parameters {unknown}; known: {sorted(parameters.SETTING_PARAMETERS)}")
        values.update(extra)
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
    """The trame application: a trame-slicer SlicerApp (scene, views) bound to a workflow.Workflow."""

    #: Largest upload request (all files together); main() sets it from --max-upload-mb.
    maxUploadBytes = safety.DEFAULT_MAX_UPLOAD_BYTES

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
        self.logic = RegistrationLogic(scene=self.scene, resultPagesFolder=self.outputDir / "registrations")
        self.workflow = Workflow(self.logic, jobsFolder=self.outputDir / "jobs")
        self._shownStudy = None
        self._shownAccuracy = None
        self._pollTask = None
        self._studyCount = 0
        self._initialState(loadSample)
        self._buildUi()
        if volumePaths:
            self.loadPaths([str(p) for p in volumePaths])
        elif loadSample:
            self.ctrl.on_server_ready.add(lambda **_: asyncio.get_event_loop().create_task(self.loadSample()))

    # --- state ----------------------------------------------------------------------------------------------------

    def _initialState(self, loadSample):
        defaults = parameters.parameter_values_from_settings(RegistrationSettings())
        s = self.state
        s.volumes = []
        s.fixed_id = None
        s.moving_id = None
        s.mask_id = None
        s.initial_path = ""
        s.paths_text = ""
        s.upload_files = None
        for name in FORM_FIELDS:
            s[name] = defaults[name]
        s.advanced_json = ""
        s.study_spacings = "1 4 10"
        s.study_repeats = 2
        s.study_modes = ["native-default", "normalised-reproducible"]
        s.study_mode_items = list(STUDY_MODES)
        s.busy = False
        s.study_busy = False
        s.progress = 0
        s.study_progress = 0
        self.workflow.status = s.status = "Loading the sample pair..." if loadSample else "Load volumes to start."
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
        s.result_url = ""
        s.study_statements = ""
        s.accuracy_seeds = 4
        s.accuracy_busy = False
        s.accuracy_progress = 0
        s.accuracy_status = ""
        s.accuracy_headers = [{"title": title, "key": f"c{i}"} for i, title in enumerate(ACCURACY_COLUMNS)]
        s.accuracy_rows = []
        s.accuracy_url = ""
        s.advice_text = ""
        s.recommendation_items = []
        s.recommendation_index = None

    def _fail(self, message: str, error: BaseException | None = None):
        self.workflow.fail(message, error)
        self._sync()
        self.state.flush()

    def _nodeById(self, nodeId):
        return self.scene.GetNodeByID(nodeId) if nodeId else None

    def _settings(self):
        values = parameterValuesFromFields({k: self.state[k] for k in (*FORM_FIELDS, "advanced_json")})
        return parameters.settings_from_parameter_values(values)

    def _sync(self):
        """Copy the workflow's state to the browser state (the only place the page shows work)."""
        w, s = self.workflow, self.state
        with s:
            s.busy, s.study_busy = w.registrationRunning, w.studyRunning
            s.progress = -1 if w.progress is None else 100.0 * w.progress
            s.study_progress = 100.0 * w.studyProgress
            s.status, s.study_status = w.status, w.studyStatus
            s.grid_summary, s.grid_warnings = w.gridSummary, w.gridWarnings
            s.error_message = w.error
            s.diagnosis = [{"name": n, "value": v} for n, v in w.diagnosis]
            s.warnings_text = w.warningsText if w.diagnosis or w.study else ""
            s.result_url = self._servedUrl(w.resultPage)
            if w.study is not None and w.study is not self._shownStudy:
                self._shownStudy = w.study
                self._showStudy(w.study)
            s.accuracy_busy, s.accuracy_status = w.accuracyRunning, w.accuracyStatus
            s.accuracy_progress = 100.0 * w.accuracyProgress
            if w.accuracy is not self._shownAccuracy:
                self._shownAccuracy = w.accuracy
                self._showAccuracy()

    def _showAccuracy(self):
        w, s = self.workflow, self.state
        s.accuracy_rows = [{f"c{i}": cell for i, cell in enumerate(row)} for row in w.accuracyRanking]
        s.advice_text = w.adviceText
        s.recommendation_items = [{"title": label, "value": index} for index, label in w.appliableRecommendations]
        s.recommendation_index = s.recommendation_items[0]["value"] if s.recommendation_items else None
        s.accuracy_url = self._servedUrl(w.accuracy.paths.get("html", w.accuracy.folder))

    def _servedUrl(self, path) -> str:
        """The URL of a page in the output folder (served under results/), or "" for none or a page elsewhere."""
        page = pathlib.Path(path).resolve() if path else None
        return (f"results/{page.relative_to(self.outputDir).as_posix()}"
                if page is not None and page.is_relative_to(self.outputDir) and page.is_file() else "")

    def _showStudy(self, study):
        nodes = study["nodes"]
        self.state.study_group_headers, self.state.study_groups = tableItems(nodes["groups"])
        self.state.study_run_headers, self.state.study_runs = tableItems(nodes["runs"])
        self.state.plots = [chartSvg(chart) for chart in nodes["charts"]]
        relative = pathlib.Path(study["reportPaths"]["html"]).resolve().relative_to(self.outputDir)
        self.state.report_url = f"results/{relative.as_posix()}"
        self.state.study_statements = "\n".join(f"- {s['text']}" for s in study["analysis"].statements)

    async def _pollJobs(self):
        """The asyncio side of the workflow: poll while a job runs (the desktop panel's QTimer)."""
        try:
            while self.workflow.registrationRunning or self.workflow.studyRunning or self.workflow.accuracyRunning:
                await asyncio.sleep(POLL_SECONDS)
                if self.workflow.poll():
                    self._sync()
        finally:
            self._pollTask = None
            self._sync()

    def _startPolling(self):
        self._sync()
        w = self.workflow
        if (w.registrationRunning or w.studyRunning or w.accuracyRunning) and self._pollTask is None:
            self._pollTask = asyncio.get_event_loop().create_task(self._pollJobs())

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
            try:  # Slicer's readers take a file cut short for whole: check every voxel is there first
                check_image_file(path, "volume")
            except InputImageError as error:
                failures.append(str(error))
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
            self.workflow.status = f"Loaded {', '.join(n.GetName() for n in loaded)}."
        if failures:
            self.workflow.fail("Could not load: " + "; ".join(failures))
        elif loaded:
            self.workflow.clearError()
        self._sync()
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
        self.workflow.status = "Preparing the sample pair (MNI152-derived PET-like pair at 4 mm)..."
        self._sync()
        self.state.flush()
        try:
            paths = await asyncio.to_thread(samplePairPaths, self.cacheDir)
        except Exception as error:  # noqa: BLE001 - shown in the browser
            self._fail("The sample pair could not be prepared", error)
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
        if not files:
            return
        folder = pathlib.Path(tempfile.mkdtemp(prefix="upload-", dir=self.outputDir))
        try:  # size limit, plain names, nothing written outside the folder (safety.py)
            paths = sorted(safety.save_uploads(files, folder, self.maxUploadBytes))
        except Exception as error:  # noqa: BLE001 - UploadError or a malformed request: shown, not a crash
            self._fail("The upload failed", error)
            return
        self.loadPaths(paths)

    def onFixedChanged(self, fixed_id=None, **_):
        if self._nodeById(fixed_id) is not None:
            self._showFixed(resetViews=False)

    # --- control grid ---------------------------------------------------------------------------------------------

    def onShowGrid(self):
        try:
            settings = self._settings()
        except SettingsError as error:
            self.workflow.fail("Cannot show the grid", error)
        else:
            self.workflow.showGrid(self._nodeById(self.state.fixed_id), settings)
        self._sync()

    def onHideGrid(self):
        self.workflow.hideGrid(scene=self.scene)
        self._sync()

    # --- registration and study -----------------------------------------------------------------------------------

    def onRegister(self):
        if self.workflow.registrationRunning:
            self.workflow.cancelRegistration()
        else:
            try:
                settings = self._settings()
            except SettingsError as error:
                self.workflow.fail("Cannot start the registration", error)
            else:
                initial = self._initialTransformNode("the registration")
                if initial is not False:
                    self.workflow.startRegistration(self._nodeById(self.state.fixed_id),
                                                    self._nodeById(self.state.moving_id), settings,
                                                    maskNode=self._nodeById(self.state.mask_id),
                                                    initialTransformNode=initial)
        self._startPolling()

    def _initialTransformNode(self, what: str):
        """The linear transform node read from the initial-transform file (None without one; False, with the
        error "Cannot start ``what``: ..." shown, when it cannot be read). A file read before is reused."""
        path = (self.state.initial_path or "").strip()
        if not path:
            return None
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode")):
            node = self.scene.GetNthNodeByClass(i, "vtkMRMLLinearTransformNode")
            if node.GetAttribute("SpacingRegistration.Web.InitialPath") == path:
                return node
        if not pathlib.Path(path).is_file():
            self.workflow.fail(f"Cannot start {what}: initial transform {path}: no such file")
            return False
        storage = self.scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
        storage.SetFileName(path)
        node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode",
                                            self.scene.GenerateUniqueName(pathlib.Path(path).stem or "initial"))
        if not storage.ReadData(node) or not node.IsLinear():
            self.scene.RemoveNode(node)
            self.scene.RemoveNode(storage)
            self.workflow.fail(f"Cannot start {what}: initial transform {path}: not a readable linear "
                               "transform file (.tfm, .h5, .txt)")
            return False
        node.SetAndObserveStorageNodeID(storage.GetID())
        node.SetAttribute("SpacingRegistration.Web.InitialPath", path)
        return node

    def onRunStudy(self):
        if self.workflow.studyRunning:
            self.workflow.cancelStudy()
            self._sync()
            return
        try:
            modes = list(self.state.study_modes or [])
            if not modes:
                raise SettingsError("choose at least one study mode")
            values = parameterValuesFromFields({k: self.state[k] for k in (*FORM_FIELDS, "advanced_json")})
            values.update({"studySpacings": str(self.state.study_spacings), "studyRepeats": self.state.study_repeats})
            values.update({name: mode in modes for name, mode in parameters.STUDY_MODE_PARAMETERS.items()})
            spec = parameters.study_spec_from_parameter_values(values)
        except (SettingsError, ValueError, TypeError) as error:
            self.workflow.fail("Cannot start the study", error)
        else:
            initial = self._initialTransformNode("the study")
            if initial is not False:
                self.workflow.startStudy(self._nodeById(self.state.fixed_id), self._nodeById(self.state.moving_id),
                                         spec, self._newOutputFolder("study"),
                                         maskNode=self._nodeById(self.state.mask_id), initialTransformNode=initial)
        self._startPolling()

    def _newOutputFolder(self, kind: str) -> pathlib.Path:
        """A new folder name under the served output folder (its pages are linked from the page)."""
        self._studyCount += 1
        return self.outputDir / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{self._studyCount}"

    def onCheckAccuracy(self):
        if self.workflow.accuracyRunning:
            self.workflow.cancelAccuracyCheck()
        else:
            try:
                settings, seeds = self._settings(), int(self.state.accuracy_seeds)
            except (SettingsError, ValueError, TypeError) as error:
                self.workflow.fail("Cannot start the accuracy check", error)
            else:
                self.workflow.startAccuracyCheck(self._nodeById(self.state.fixed_id), settings,
                                                 self._newOutputFolder("accuracy"), seeds=seeds)
        self._startPolling()

    def onApplyRecommendation(self):
        """Set the form fields (and the advanced JSON) to the chosen recommendation: exactly the parameters it names."""
        index = self.state.recommendation_index
        try:
            values = parameterValuesFromFields({k: self.state[k] for k in (*FORM_FIELDS, "advanced_json")})
            changed = self.workflow.applyRecommendation(int(index), values)
        except (SettingsError, ValueError, TypeError, IndexError) as error:
            self.workflow.fail("Cannot apply the recommendation", error)
        else:
            advanced = {name: value for name, value in changed.items() if name not in FORM_FIELDS}
            with self.state:
                for name in set(changed) & set(FORM_FIELDS):
                    self.state[name] = changed[name]
                if advanced:
                    extra = json.loads(str(self.state.advanced_json or "").strip() or "{}")
                    self.state.advanced_json = json.dumps({**extra, **advanced})
        self._sync()

    # --- UI -------------------------------------------------------------------------------------------------------

    def _buildUi(self):
        from trame.widgets import client, html
        from trame.widgets import vuetify3 as v
        from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

        self.state.change("fixed_id")(self.onFixedChanged)
        self.state.change("error_message")(lambda error_message=None, **_: error_message or self.workflow.clearError())
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
                    with v.VExpansionPanels(multiple=True, model_value=("panels", [0, 1, 2, 3, 4])):
                        self._inputsPanel(v, html)
                        self._settingsPanel(v, html)
                        self._studyPanel(v, html)
                        self._accuracyPanel(v, html)
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
                v.VSelect(label="Fixed mask (optional; non-zero = inside)", v_model=("mask_id",), items=("volumes",),
                          id="mask-select", density="compact", clearable=True)
                v.VTextField(label="Initial transform file on the server (optional; linear, fixed to moving, "
                             "e.g. General Registration's .tfm/.h5)", v_model=("initial_path",),
                             id="initial-path", density="compact", clearable=True)
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
                with html.Div(classes="d-flex flex-wrap column-gap-2"):
                    for name, field in FORM_FIELDS.items():
                        self._formField(v, field, name)
                with html.Div(classes="d-flex flex-wrap ga-2 mt-2"):
                    v.VBtn("Show grid", click=self.onShowGrid, id="show-grid", size="small", color="primary")
                    v.VBtn("Hide grid", click=self.onHideGrid, id="hide-grid", size="small")
                    v.VBtn("{{ busy ? 'Cancel registration' : 'Run registration' }}", click=self.onRegister,
                           id="run-registration", size="small", color=("busy ? 'warning' : 'primary'",))
                html.Div("{{ grid_summary }}", id="grid-summary", classes="text-caption mt-2")
                html.Div("{{ grid_warnings }}", classes="text-caption text-warning sr-pre")

    @staticmethod
    def _formField(v, field, name):
        """One form field from the settings' metadata (parameters.parameter_fields); its id is the parameter name."""
        label = parameters.field_label(field)
        if field.kind == "bool":
            v.VCheckbox(label=label, v_model=(name,), density="compact", id=name, hide_details=True)
        elif field.kind == "choice":
            v.VSelect(label=label, v_model=(name,), items=(list(field.choices),), density="compact", id=name,
                      style="min-width: 12rem")
        else:
            v.VTextField(label=label, v_model=(name,), type="number" if field.kind in ("int", "float") else "text",
                         min=field.range[0] if field.range else None, max=field.range[1] if field.range else None,
                         density="compact", id=name, style="min-width: 9rem")

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

    def _accuracyPanel(self, v, html):
        with v.VExpansionPanel(title="Accuracy check"):
            with v.VExpansionPanelText():
                html.Div("Deforms the fixed volume by a known deformation, registers it back with your settings and "
                         "alternatives, and ranks them by their error against the truth.", classes="text-caption")
                v.VTextField(label="seeds per candidate", v_model=("accuracy_seeds",), type="number", min=1,
                             density="compact", id="accuracy-seeds")
                v.VBtn("{{ accuracy_busy ? 'Cancel check' : 'Check accuracy' }}", click=self.onCheckAccuracy,
                       id="check-accuracy", size="small", color=("accuracy_busy ? 'warning' : 'primary'",))
                v.VProgressLinear(v_if="accuracy_busy", model_value=("accuracy_progress",), height=6, classes="mt-2",
                                  id="accuracy-progress")
                html.Div("{{ accuracy_status }}", id="accuracy-status", classes="text-caption mt-1 sr-pre")
                with html.Div(v_if="recommendation_items.length", classes="mt-2"):
                    v.VSelect(label="recommendation", v_model=("recommendation_index",),
                              items=("recommendation_items",), density="compact", id="recommendation-select")
                    v.VBtn("Apply recommendation", click=self.onApplyRecommendation, id="apply-recommendation",
                           size="small", disabled=("accuracy_busy",))

    def _advancedPanel(self, v, html):
        with v.VExpansionPanel(title="Advanced"):
            with v.VExpansionPanelText():
                v.VTextarea(label="advanced settings (JSON object of panel parameters)", v_model=("advanced_json",),
                            rows=3, density="compact", id="advanced-json",
                            placeholder='{"histogramBins": 32, "optimizer": "lbfgsb", "numberOfThreads": 1}')
                html.Div("Parameter names: " + ", ".join(sorted(parameters.SETTING_PARAMETERS)), classes="text-caption")

    @staticmethod
    def _resultTable(v, html, title, name, table, link, text):
        """A heading, the table of state variables ``table`` (rows, headers) with id ``<name>-table``, a link to the
        served page (text, url variable) and a text; the ids follow ``name``."""
        html.H3(title)
        v.VDataTable(items=(table[0],), headers=(table[1],), density="compact", items_per_page=-1,
                     id=f"{name}-table", hide_default_footer=True)
        html.A(link[0], href=(link[1],), target="_blank", id=f"{name}-link", v_if=link[1])
        html.Div(f"{{{{ {text} }}}}", classes="sr-pre mt-2", id=f"{name}-text")

    def _resultsArea(self, v, html):
        with html.Div(classes="pa-3", id="results"):
            with html.Div(v_if="diagnosis.length"):
                html.H3("Registration diagnosis")
                v.VDataTable(items=("diagnosis",), headers=("[{title: 'Name', key: 'name'}, "
                                                            "{title: 'Value', key: 'value'}]",),
                             density="compact", items_per_page=-1, id="diagnosis-table", hide_default_footer=True)
                html.A("Open the result report (displacement and Jacobian maps, metric trace)", href=("result_url",),
                       target="_blank", id="result-link", v_if="result_url")
                html.Div("{{ warnings_text }}", classes="sr-pre text-warning")
            with html.Div(v_if="accuracy_rows.length", id="accuracy-results"):
                self._resultTable(v, html, "Accuracy check: candidates ranked by their error against a known "
                                  "deformation", "accuracy", ("accuracy_rows", "accuracy_headers"),
                                  ("Open the ranking page", "accuracy_url"), "advice_text")
            with html.Div(v_if="study_groups.length", id="study-results"):
                self._resultTable(v, html, "Study per spacing and mode", "study-groups",
                                  ("study_groups", "study_group_headers"), ("Open the report", "report_url"),
                                  "study_statements")
                with html.Div(classes="d-flex flex-wrap ga-2 mt-2"):
                    html.Div(v_for="(plot, i) in plots", key="i", v_html="plot", classes="sr-svg",
                             )
                html.H3("Study runs")
                v.VDataTable(items=("study_runs",), headers=("study_run_headers",), density="compact",
                             items_per_page=-1, id="study-runs-table", hide_default_footer=True)


def parseArguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m SpacingRegistrationWeb",
                                     description="Serve the SpacingRegistration web front end (trame-slicer).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; another address needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="accept a --host other machines can reach, knowing the server has no login: anyone who "
                             "reaches the port can upload files, load volumes by path and run registrations here")
    parser.add_argument("--max-upload-mb", type=float, default=safety.DEFAULT_MAX_UPLOAD_BYTES / 1024 ** 2,
                        help="largest upload request in MB (default %(default)g)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--output-dir", default=None, help="folder for studies and uploads (default: a new temp folder)")
    parser.add_argument("--cache-dir", default=None, help="cache of the sample data (default $SPACINGREG_CACHE or "
                                                          "~/.cache/SpacingRegistration)")
    parser.add_argument("--no-sample", action="store_true", help="do not load the bundled sample pair at start")
    parser.add_argument("volumes", nargs="*", help="volume files to load (first fixed, second moving)")
    return parser.parse_args(argv)


def main(argv=None):
    options = parseArguments(argv)
    try:
        warning = safety.check_host(options.host, options.port, options.allow_remote)
    except safety.UnsafeHostError as error:
        print(f"python -m SpacingRegistrationWeb: error: {error}", file=sys.stderr)
        sys.exit(2)
    if warning:
        print(warning, file=sys.stderr)
    SpacingRegistrationWebApp.maxUploadBytes = int(options.max_upload_mb * 1024 ** 2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    app = SpacingRegistrationWebApp(outputDir=options.output_dir, cacheDir=options.cache_dir,
                                    volumePaths=options.volumes, loadSample=not options.no_sample)
    # trame's own command-line parser reads sys.argv too: keep it to the options it knows.
    sys.argv = sys.argv[:1]
    app.server.start(host=options.host, port=options.port, open_browser=False, timeout=0)


if __name__ == "__main__":
    main()
