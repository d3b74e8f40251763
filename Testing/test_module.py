"""The scripted module imports headless, and its SpacingRegistrationTest runs under pytest and under the unittest
loader that Slicer's ctest uses (slicer_add_python_unittest). The logic's own tests are in test_logic.py."""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import io
import logging
import sys
import unittest
from pathlib import Path

MODULE_DIRECTORY = Path(__file__).resolve().parents[1] / "SpacingRegistration"
if str(MODULE_DIRECTORY) not in sys.path:
    sys.path.insert(0, str(MODULE_DIRECTORY))

import SpacingRegistration  # noqa: E402  (the module file, SpacingRegistration/SpacingRegistration.py)

TEST_NAMES = sorted(name for name in dir(SpacingRegistration.SpacingRegistrationTest) if name.startswith("test_"))


class ModuleSelfTest(SpacingRegistration.SpacingRegistrationTest):
    """The module's own tests, one pytest item per test_ method (setUp runs before each)."""


class UnittestLoaderTest(unittest.TestCase):
    def _run(self, suite):
        stream = io.StringIO()
        result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
        return result, stream.getvalue()

    def test_the_module_file_is_imported(self):
        self.assertEqual(Path(SpacingRegistration.__file__).resolve(), MODULE_DIRECTORY / "SpacingRegistration.py")
        self.assertGreaterEqual(len(TEST_NAMES), 1)

    def test_unittest_loader_runs_every_test_and_all_pass(self):
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(SpacingRegistration.SpacingRegistrationTest)
        self.assertEqual(sorted(test._testMethodName for test in suite), TEST_NAMES)
        result, output = self._run(suite)
        self.assertEqual(result.testsRun, len(TEST_NAMES))
        self.assertTrue(result.wasSuccessful(), output)

    def test_loading_the_module_finds_only_the_module_test_case(self):
        """What slicer.testing.runUnitTest does: load every TestCase of the module file."""
        suite = unittest.defaultTestLoader.loadTestsFromModule(SpacingRegistration)
        names = sorted(test._testMethodName for group in suite for test in group)
        self.assertEqual(names, TEST_NAMES)

    def test_self_test_entry_runs_every_test(self):
        """Slicer's Reload-and-Test calls SpacingRegistrationTest().runTest(): setUp, then each test_ method."""
        calls = []

        class Recording(SpacingRegistration.SpacingRegistrationTest):
            def setUp(self):
                calls.append("setUp")
                super().setUp()

        for name in TEST_NAMES:
            def wrapped(self, _name=name):
                calls.append(_name)
                getattr(SpacingRegistration.SpacingRegistrationTest, _name)(self)
            setattr(Recording, name, wrapped)
        logging.disable(logging.INFO)
        try:
            Recording().runTest()
        finally:
            logging.disable(logging.NOTSET)
        self.assertEqual(calls, [step for name in TEST_NAMES for step in ("setUp", name)])


if __name__ == "__main__":
    unittest.main()
