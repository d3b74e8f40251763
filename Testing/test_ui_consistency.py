"""The panel's .ui file, the parameter node and the module's CMakeLists agree with each other and with the code.

The widget code and SpacingRegistrationParameterNode need qt, which a headless Python lacks: the parameter node's
fields are checked as the module builds them (parameters.parameter_fields, from the settings' metadata), the widget
code statically (ast of the module source, XML of the .ui), against what parameterNodeWrapper's GUI connectors
accept (Slicer's Base/Python/slicer/parameterNodeWrapper/guiConnectors.py).
"""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import ast
import re
import sys
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE_DIRECTORY = Path(__file__).resolve().parents[1] / "SpacingRegistration"
if str(MODULE_DIRECTORY) not in sys.path:
    sys.path.insert(0, str(MODULE_DIRECTORY))

from SpacingRegistrationLib import parameters  # noqa: E402
from SpacingRegistrationLib.settings import RegistrationSettings, field_info, leaf_paths  # noqa: E402

MODULE_FILE = MODULE_DIRECTORY / "SpacingRegistration.py"
UI_FILE = MODULE_DIRECTORY / "Resources" / "UI" / "SpacingRegistration.ui"
CMAKE_FILE = MODULE_DIRECTORY / "CMakeLists.txt"
LIBRARY_DIRECTORY = MODULE_DIRECTORY / "SpacingRegistrationLib"

#: Widget classes each parameter type can be bound to (parameterNodeWrapper's GUI connectors, exact types).
WIDGETS_FOR_TYPE = {
    "bool": {"QCheckBox", "ctkCheckBox"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox", "qMRMLSliderWidget"},
    "choice": {"QComboBox", "ctkComboBox"},
    "str": {"QLineEdit"},
    "path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}


class Parameter:
    """One parameter of SpacingRegistrationParameterNode, as the module builds it (parameters.parameter_fields)."""

    def __init__(self, field):
        self.name = field.name
        self.kind = field.kind
        self.withinRange = field.range
        self.choice = field.choices
        self.type = field.default if field.kind == "node" else field.kind
        self.default = None if field.kind in ("node", "path") else field.default


def parameterNodeFields() -> dict:
    return {f.name: Parameter(f) for f in parameters.parameter_fields()}


def uiWidgets() -> dict:
    """name -> <widget> element of every widget in the .ui."""
    root = ET.parse(UI_FILE).getroot()
    widgets = {}
    for element in root.iter("widget"):
        name = element.get("name")
        assert name not in widgets, f"duplicate widget name {name}"
        widgets[name] = element
    return widgets


def uiProperty(element, name):
    """Python value of a widget property (None when absent)."""
    found = element.find(f"property[@name='{name}']")
    if found is None:
        return None
    value = found[0]
    if value.tag == "stringlist":
        return [s.text for s in value]
    if value.tag == "bool":
        return value.text == "true"
    if value.tag == "number":
        return int(value.text)
    if value.tag == "double":
        return float(value.text)
    return value.text or ""


def uiDefault(element):
    """The value a widget shows when the .ui is loaded."""
    cls = element.get("class")
    if cls in ("QCheckBox", "ctkCheckBox"):
        return bool(uiProperty(element, "checked"))
    if cls in ("QComboBox", "ctkComboBox"):
        items = [item.find("property[@name='text']/string").text for item in element.findall("item")]
        return items[uiProperty(element, "currentIndex") or 0]
    if cls == "QLineEdit":
        return uiProperty(element, "text") or ""
    return uiProperty(element, "value")


class ParameterNodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fields = parameterNodeFields()
        cls.widgets = uiWidgets()
        cls.bound = {}
        for name, element in cls.widgets.items():
            parameter = uiProperty(element, "SlicerParameterName")
            if parameter is not None:
                cls.bound.setdefault(parameter, []).append(name)

    def test_fields_are_the_module_parameter_list(self):
        self.assertEqual(list(self.fields), list(parameters.PARAMETER_NAMES))

    def test_module_builds_the_parameter_node_from_the_field_list(self):
        tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        self.assertIn("parameters.parameter_fields", calls)
        assignments = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                       and any(ast.unparse(target) == "SpacingRegistrationParameterNode" for target in n.targets)]
        self.assertEqual(len(assignments), 1)
        self.assertEqual(ast.unparse(assignments[0].value.func), "parameterNodeWrapper")

    def test_each_setting_is_declared_once_in_the_settings_metadata(self):
        """Ranges, labels, None values and display kinds come from the dataclass fields' metadata."""
        self.assertEqual(sorted(parameters.SETTING_PARAMETERS.values()), sorted(leaf_paths()))
        for name, path in parameters.SETTING_PARAMETERS.items():
            info = field_info(path)
            with self.subTest(parameter=name):
                self.assertTrue(info["label"])
                self.assertIn(info["display"], ("number", "scientific", "choice", "check", "levels"))
                self.assertEqual(self.fields[name].withinRange, info.get("range"))
                if "none" in info:
                    self.assertEqual(parameters.NONE_VALUES[name], info["none"])
                    self.assertEqual(info["range"][0], info["none"])

    def test_every_slicer_parameter_name_is_a_field(self):
        self.assertEqual(sorted(set(self.bound) - set(self.fields)), [])

    def test_every_field_has_exactly_one_widget(self):
        self.assertEqual(sorted(set(self.fields) - set(self.bound)), [])
        self.assertEqual({p: w for p, w in self.bound.items() if len(w) != 1}, {})

    def test_widget_class_can_represent_the_field_type(self):
        for parameter, (widgetName,) in self.bound.items():
            field = self.fields[parameter]
            with self.subTest(parameter=parameter):
                self.assertIn(field.kind, WIDGETS_FOR_TYPE)
                self.assertIn(self.widgets[widgetName].get("class"), WIDGETS_FOR_TYPE[field.kind])

    def test_numbers_are_bounded_and_the_ui_shows_the_same_range(self):
        """Connectors replace a spin box's range by the annotation's (unbounded without one) and refuse unbounded
        sliders: every number is annotated WithinRange, and the .ui's range is the same."""
        for name, field in self.fields.items():
            if field.kind not in ("int", "float"):
                continue
            with self.subTest(parameter=name):
                self.assertIsNotNone(field.withinRange, "annotate with WithinRange")
                element = self.widgets[self.bound[name][0]]
                self.assertEqual((uiProperty(element, "minimum"), uiProperty(element, "maximum")), field.withinRange)

    def test_node_selectors_offer_the_field_node_type(self):
        for name, field in self.fields.items():
            if field.kind == "node":
                self.assertEqual(uiProperty(self.widgets[self.bound[name][0]], "nodeTypes"), [field.type], name)

    def test_combo_boxes_list_the_choices(self):
        for name, field in self.fields.items():
            if field.kind == "choice":
                element = self.widgets[self.bound[name][0]]
                items = [item.find("property[@name='text']/string").text for item in element.findall("item")]
                self.assertEqual(tuple(items), tuple(field.choice), name)

    def test_setting_defaults_are_the_registration_settings_defaults(self):
        expected = parameters.parameter_values_from_settings(RegistrationSettings())
        for name, value in expected.items():
            with self.subTest(parameter=name):
                self.assertEqual(self.fields[name].default, value)
                self.assertIs(type(self.fields[name].default), type(value))

    def test_study_defaults_are_the_study_spec_defaults(self):
        from SpacingRegistrationLib.study_spec import StudySpec

        defaults = {name: field.default for name, field in self.fields.items()}
        spec = StudySpec()
        self.assertEqual(parameters.parse_spacings(defaults["studySpacings"]), spec.spacings)
        self.assertEqual(defaults["studyRepeats"], spec.repeats)
        self.assertEqual(parameters.study_modes_from_parameter_values(defaults), spec.modes)

    def test_ui_shows_the_defaults(self):
        for name, field in self.fields.items():
            if field.kind in ("node", "path"):
                continue
            with self.subTest(parameter=name):
                self.assertEqual(uiDefault(self.widgets[self.bound[name][0]]), field.default)

    def test_values_standing_for_none_are_the_minimum_with_a_special_text(self):
        for name, value in parameters.NONE_VALUES.items():
            element = self.widgets[self.bound[name][0]]
            self.assertEqual(uiProperty(element, "minimum"), value, name)
            self.assertTrue(uiProperty(element, "specialValueText"), name)

    def test_text_fields_are_the_scientific_and_pyramid_level_parameters(self):
        textSettings = {n for n, f in self.fields.items() if f.kind == "str" and n in parameters.SETTING_PARAMETERS}
        self.assertEqual(textSettings, set(parameters.SCIENTIFIC_PARAMETERS) | set(parameters.LEVELS_PARAMETERS))
        self.assertEqual(set(parameters.LEVELS_PARAMETERS), {"shrinkFactors", "smoothingSigmas"})


class WidgetCodeTest(unittest.TestCase):
    def test_every_ui_widget_the_code_uses_exists(self):
        tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
        self.assertGreater(len(used), 10)
        self.assertEqual(sorted(used - set(uiWidgets())), [])

    def test_ui_form(self):
        root = ET.parse(UI_FILE).getroot()
        top = root.find("widget")
        self.assertEqual((top.get("class"), top.get("name")), ("qMRMLWidget", "SpacingRegistration"))
        widgets = uiWidgets()
        sections = {uiProperty(w, "text") for w in widgets.values() if w.get("class") == "ctkCollapsibleButton"}
        self.assertEqual(sections, {"Inputs", "Control grid", "Registration", "Study", "Results", "Advanced",
                                    "Accuracy check"})
        declared = {c.find("class").text for c in root.iter("customwidget")}
        used = {w.get("class") for w in widgets.values()}
        self.assertEqual(sorted(c for c in used if c.startswith(("qMRML", "ctk")) and c not in declared), [])

    def test_mrml_widgets_receive_the_scene(self):
        root = ET.parse(UI_FILE).getroot()
        receivers = {c.find("receiver").text for c in root.iter("connection")
                     if c.find("sender").text == "SpacingRegistration"
                     and c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                     and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
        mrmlWidgets = {n for n, w in uiWidgets().items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
        self.assertEqual(mrmlWidgets - receivers, set())


class CMakeListsTest(unittest.TestCase):
    @staticmethod
    def cmakeList(variable: str) -> list:
        text = CMAKE_FILE.read_text(encoding="utf-8")
        match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
        assert match, f"{variable} not set in {CMAKE_FILE}"
        return [entry.replace("${MODULE_NAME}", "SpacingRegistration") for entry in match.group(1).split()]

    def test_scripts_list_every_python_file(self):
        expected = {"SpacingRegistration.py"} | {p.relative_to(MODULE_DIRECTORY).as_posix()
                                                 for p in LIBRARY_DIRECTORY.rglob("*.py")}
        self.assertEqual(set(self.cmakeList("MODULE_PYTHON_SCRIPTS")), expected)

    def test_resources_list_every_resource_file(self):
        resources = MODULE_DIRECTORY / "Resources"
        expected = {p.relative_to(MODULE_DIRECTORY).as_posix() for p in resources.rglob("*") if p.is_file()}
        self.assertEqual(set(self.cmakeList("MODULE_PYTHON_RESOURCES")), expected)

    def test_scripted_module_macro_with_generic_tests_and_the_unittest(self):
        text = CMAKE_FILE.read_text(encoding="utf-8")
        self.assertRegex(text, r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}\s+SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}"
                               r"\s+RESOURCES \$\{MODULE_PYTHON_RESOURCES\}\s+WITH_GENERIC_TESTS\s*\)")
        self.assertRegex(text, r"(?s)if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\).*endif\(\)")

    def test_icons(self):
        moduleIcon = MODULE_DIRECTORY / "Resources" / "Icons" / "SpacingRegistration.png"
        extensionIcon = MODULE_DIRECTORY.parent / "Resources" / "SpacingRegistration.png"
        for icon in (moduleIcon, extensionIcon):
            data = icon.read_bytes()
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n", icon)
            self.assertEqual((int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")), (128, 128))


if __name__ == "__main__":
    unittest.main()
