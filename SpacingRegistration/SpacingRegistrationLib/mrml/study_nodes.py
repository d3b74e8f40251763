"""A finished study as MRML nodes: tables, plot charts, per-voxel spread and difference maps (slicer + vtk, no qt)."""

from __future__ import annotations

import math

import SimpleITK as sitk
import vtk

from . import bridge
from ..report import GROUP_COLUMNS, RUN_COLUMNS, group_record, number, run_record
from ..study_store import StudyStore
from ..variability import StudyAnalysis

REPORT_ATTRIBUTE = "SpacingRegistration.Report"
STUDY_FOLDER_ATTRIBUTE = "SpacingRegistration.StudyFolder"
#: (chart title, y-axis title, value of a group) for each plot chart.
CHARTS = (
    ("Run-to-run spread vs spacing", "max spread (voxels)", lambda g: g.spread_voxels["max"]),
    ("Difference from the reference spacing", "max difference (voxels)",
     lambda g: g.difference_from_reference_voxels.get("max", math.nan)),
    ("Iterations vs spacing", "mean iterations (all libLBFGS runs)", lambda g: g.iterations["mean"]),
)


def _tableNode(scene, name: str, columns, records):
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for column in columns:
        array = vtk.vtkStringArray()
        array.SetName(column)
        table.AddColumn(array)
    for record in records:
        row = node.AddEmptyRow()
        for index, column in enumerate(columns):
            node.SetCellText(row, index, number(record[column]))
    return node


def _chartNode(scene, title: str, yTitle: str, analysis: StudyAnalysis, value, prefix: str):
    """One line series per mode: value against spacing (a table node holds the numbers)."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{prefix} {title}")
    chart.SetTitle(title)
    chart.SetXAxisTitle("spacing (mm)")
    chart.SetYAxisTitle(yTitle)
    modes = list(dict.fromkeys(g.mode for g in analysis.groups))
    spacings = sorted({g.spacing for g in analysis.groups})
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{prefix} {title} data")
    for name in ("spacing", *modes):
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        table.AddColumn(column)
    for spacing in spacings:
        row = table.AddEmptyRow()
        table.GetTable().SetValue(row, 0, vtk.vtkVariant(spacing))
        for index, mode in enumerate(modes):
            group = next((g for g in analysis.groups if g.mode == mode and g.spacing == spacing), None)
            table.GetTable().SetValue(row, index + 1, vtk.vtkVariant(math.nan if group is None else value(group)))
    for mode in modes:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{prefix} {title} {mode}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("spacing")
        series.SetYColumnName(mode)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleCircle)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def createStudyNodes(scene, store: StudyStore, analysis: StudyAnalysis, reportPaths: dict, prefix: str = "Study"):
    """New nodes for a study: 'groups' and 'runs' tables, plot 'charts', per-group 'spreadMaps' volumes and
    'differenceMaps' volumes (each other spacing against the reference spacing).

    The groups table carries the report's path and the study folder as attributes.
    """
    rows = [store.rows[run.run_id] for run in store.spec.runs() if run.run_id in store.rows]
    groups = _tableNode(scene, f"{prefix} per spacing and mode", GROUP_COLUMNS, [group_record(g) for g in analysis.groups])
    groups.SetAttribute(REPORT_ATTRIBUTE, str(reportPaths["html"]))
    groups.SetAttribute(STUDY_FOLDER_ATTRIBUTE, str(store.folder))
    runs = _tableNode(scene, f"{prefix} runs", RUN_COLUMNS, [run_record(row) for row in rows])
    charts = [_chartNode(scene, title, yTitle, analysis, value, prefix) for title, yTitle, value in CHARTS]
    spreadMaps = [bridge.volumeNodeFromImage(scene, sitk.ReadImage(g.spread_map),
                                                  f"{prefix} spread {g.mode} s{g.spacing:g}")
                  for g in analysis.groups if g.spread_map]
    reference = analysis.reference_spacing
    differenceMaps = [bridge.volumeNodeFromImage(scene, sitk.ReadImage(g.difference_map),
                                                 f"{prefix} difference {g.mode} s{g.spacing:g} vs s{reference:g}")
                      for g in analysis.groups if g.difference_map]
    return {"groups": groups, "runs": runs, "charts": charts, "spreadMaps": spreadMaps,
            "differenceMaps": differenceMaps}
