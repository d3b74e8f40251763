"""The panel's parameters (parameter node and web form) and their conversion to and from RegistrationSettings.

Parameter names are camelCase (parameterNodeWrapper fields, SlicerParameterName in the .ui); each setting
parameter maps to a RegistrationSettings field path ("a.b" for nested optimizer settings, "mesh_size.0" for one
axis). Which parameters stand for None and which are text come from the settings' field metadata
(settings.field_info), so they are declared once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import RegistrationSettings, SettingsError, field_info, from_dict, leaf_paths, to_dict
from .study_spec import StudySpec

#: Parameter-node parameters that hold nodes.
NODE_PARAMETERS = ("fixedVolume", "movingVolume", "fixedMask", "initialTransform", "outputTransform", "diagnosisTable")


def parameter_name(path: str) -> str:
    """camelCase parameter of a settings field path: ``lbfgs2.line_search_accuracy`` -> ``lbfgs2LineSearchAccuracy``,
    ``mesh_size.0`` -> ``meshSizeX`` (or the field's ``parameter`` metadata)."""
    info = field_info(path)
    if "parameter" in info:
        return info["parameter"]
    first, _dot, rest = path.partition(".")
    words = first.split("_") + ("XYZ"[int(rest)] if rest.isdigit() else rest).split("_")
    return words[0] + "".join(word[:1].upper() + word[1:] for word in words[1:] if word)


#: Parameter -> RegistrationSettings field path; every field of RegistrationSettings has one (and so a widget).
SETTING_PARAMETERS = {parameter_name(path): path for path in leaf_paths()}
#: Parameters shown as text because their values span many decades (1e-20 .. 1e20); any float notation is accepted.
SCIENTIFIC_PARAMETERS = tuple(name for name, path in SETTING_PARAMETERS.items()
                              if field_info(path).get("display") == "scientific")
#: Parameters holding one number per pyramid level, shown as text ("4, 2, 1").
LEVELS_PARAMETERS = tuple(name for name, path in SETTING_PARAMETERS.items()
                          if field_info(path).get("display") == "levels")
#: Parameter value standing for the setting None (the spin boxes show it with their specialValueText).
NONE_VALUES = {name: field_info(path)["none"] for name, path in SETTING_PARAMETERS.items()
               if "none" in field_info(path)}
#: Study-section parameters (the study modes are units-threads pairs, one check box each).
STUDY_MODE_PARAMETERS = {
    "studyModeNativeDefault": "native-default",
    "studyModeNativeReproducible": "native-reproducible",
    "studyModeNormalisedDefault": "normalised-default",
    "studyModeNormalisedReproducible": "normalised-reproducible",
}
STUDY_PARAMETERS = ("studySpacings", "studyRepeats", *STUDY_MODE_PARAMETERS, "studyFolder")
#: Every parameter of SpacingRegistrationParameterNode.
PARAMETER_NAMES = (*NODE_PARAMETERS, *SETTING_PARAMETERS, *STUDY_PARAMETERS)
#: Node type of each node parameter.
NODE_TYPES = {"fixedVolume": "vtkMRMLScalarVolumeNode", "movingVolume": "vtkMRMLScalarVolumeNode",
              "fixedMask": "vtkMRMLLabelMapVolumeNode", "initialTransform": "vtkMRMLLinearTransformNode",
              "outputTransform": "vtkMRMLBSplineTransformNode", "diagnosisTable": "vtkMRMLTableNode"}


@dataclass(frozen=True)
class ParameterField:
    """One parameter of the panel: ``kind`` is bool, int, float, str, choice, node or path."""

    name: str
    kind: str
    default: object = None
    range: tuple | None = None
    choices: tuple | None = None
    label: str = ""
    unit: str = ""
    none_text: str = ""


def _setting_field(name: str, path: str, default) -> ParameterField:
    info = field_info(path)
    display = info["display"]
    kind = {"choice": "choice", "check": "bool", "scientific": "str", "levels": "str"}.get(display)
    if kind is None:
        kind = type(info.get("none", info["default"])).__name__
    return ParameterField(name, kind, default, info.get("range"), info.get("choices"), info["label"], info["unit"],
                          info.get("none_text", ""))


def parameter_fields() -> list[ParameterField]:
    """Every parameter of the panel in PARAMETER_NAMES order; the parameter node is built from this list."""
    defaults = parameter_values_from_settings(RegistrationSettings())
    study = StudySpec()
    fields = [ParameterField(name, "node", NODE_TYPES[name]) for name in NODE_PARAMETERS]
    fields += [_setting_field(name, path, defaults[name]) for name, path in SETTING_PARAMETERS.items()]
    fields += [ParameterField("studySpacings", "str", ", ".join(f"{s:g}" for s in study.spacings), label="spacings",
                              unit="mm"),
               ParameterField("studyRepeats", "int", study.repeats, (1, 1000), label="repeats")]
    fields += [ParameterField(name, "bool", mode in study.modes, label=mode)
               for name, mode in STUDY_MODE_PARAMETERS.items()]
    fields.append(ParameterField("studyFolder", "path", None, label="study folder"))
    return fields


def _format_scientific(value: float) -> str:
    return f"{value:.12g}"


def settings_from_parameter_values(values: dict) -> RegistrationSettings:
    """RegistrationSettings from parameter values (as the panel's parameter node holds them).

    Parameters missing from ``values`` keep the settings' defaults; values that are not settings are ignored.
    Raises SettingsError naming the parameter when a text field does not hold a number.
    """
    settings = to_dict(RegistrationSettings())
    for name, path in SETTING_PARAMETERS.items():
        if name not in values:
            continue
        value = values[name]
        if name in NONE_VALUES and value == NONE_VALUES[name]:
            value = None
        elif name in SCIENTIFIC_PARAMETERS:
            try:
                value = float(str(value).strip())
            except ValueError:
                raise SettingsError(f"{name} ({path}) must be a number, got {value!r}") from None
        elif name in LEVELS_PARAMETERS:
            value = _parse_levels(name, path, value)
        _set_path(settings, path, value)
    return from_dict(settings)


def parameter_values_from_settings(settings: RegistrationSettings) -> dict:
    """Inverse of settings_from_parameter_values: the value of every settings parameter."""
    values = to_dict(settings)
    result = {}
    for name, path in SETTING_PARAMETERS.items():
        value = _get_path(values, path)
        if value is None:
            value = NONE_VALUES[name]
        elif name in SCIENTIFIC_PARAMETERS:
            value = _format_scientific(value)
        elif name in LEVELS_PARAMETERS:
            value = ", ".join(f"{v:g}" for v in value)
        result[name] = value
    return result


def _parse_levels(name: str, path: str, text) -> list:
    """One number per pyramid level from text such as ``"4, 2, 1"`` (integers for the shrink factors)."""
    kind = int if isinstance(field_info(path)["default"][0], int) else float
    parts = [p for p in str(text).replace(",", " ").replace(";", " ").split() if p]
    try:
        return [kind(p) for p in parts]
    except ValueError:
        what = "whole numbers" if kind is int else "numbers"
        raise SettingsError(f"{name} ({path}) must be {what} separated by commas, one per level, "
                            f"got {text!r}") from None


def _set_path(values: dict, path: str, value):
    first, _dot, rest = path.partition(".")
    if not rest:
        values[first] = value
    elif rest.isdigit():
        values[first] = list(values[first])
        values[first][int(rest)] = value
    else:
        values[first] = {**values[first], rest: value}


def _get_path(values: dict, path: str):
    first, _dot, rest = path.partition(".")
    if not rest:
        return values[first]
    if rest.isdigit():
        return values[first][int(rest)]
    return values[first][rest]


def parse_spacings(text: str) -> tuple:
    """Study spacings from text such as ``"1, 4, 10"`` or ``"0.5 1 2"`` (mm)."""
    parts = [p for p in str(text).replace(",", " ").replace(";", " ").split() if p]
    if not parts:
        raise SettingsError("the study needs at least one spacing")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise SettingsError(f"study spacings must be numbers separated by commas or spaces, got {text!r}") from None


def study_modes_from_parameter_values(values: dict) -> tuple:
    """The checked study modes, in the StudySpec order."""
    return tuple(mode for name, mode in STUDY_MODE_PARAMETERS.items() if values.get(name))


def study_spec_from_parameter_values(values: dict, settings: RegistrationSettings | None = None):
    """A StudySpec from the Study section's parameter values."""
    settings = settings if settings is not None else settings_from_parameter_values(values)
    repeats = parse_parameter_value(ParameterField("studyRepeats", "int"), values["studyRepeats"])
    return StudySpec(settings=settings, spacings=parse_spacings(values["studySpacings"]), repeats=repeats,
                     modes=study_modes_from_parameter_values(values))


def expected_iterations(settings: RegistrationSettings) -> int:
    """Iterations the optimizer is limited to (0 when unknown: LBFGS2 without a limit runs until it stops)."""
    if settings.optimizer == "lbfgs2":
        return settings.lbfgs2.number_of_iterations
    if settings.optimizer == "lbfgsb":
        return settings.lbfgsb.number_of_iterations
    return settings.gradient_descent.number_of_iterations



def field_label(field: ParameterField) -> str:
    """A form label from the metadata: ``seed (-1: wall clock)``, ``spacing override (mm; 0: off)``."""
    notes = [field.unit] if field.unit else []
    if field.none_text:
        notes.append(f"{field.range[0] if field.range else ''}: {field.none_text}")
    return f"{field.label} ({'; '.join(notes)})" if notes else field.label


def parse_parameter_value(field: ParameterField, value):
    """The value of a parameter typed into a text form (a web page), of the field's kind; SettingsError names it."""
    if field.kind not in ("int", "float"):
        return bool(value) if field.kind == "bool" else value
    if isinstance(value, bool):
        raise SettingsError(f"{field.name} must be a number, got {value!r}")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingsError(f"{field.name} must be a number, got {value!r}") from None
    if field.kind == "int":
        if number != int(number):
            raise SettingsError(f"{field.name} must be an integer, got {value!r}")
        return int(number)
    return number
