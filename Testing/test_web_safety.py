"""The web server's safety checks (issue 13 §4): loopback by default, another host only with --allow-remote,
uploads size-limited, well-formed and written only inside the upload folder. Standard library only: no server
is started here (Testing/test_web.py drives the real one)."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from SpacingRegistrationWeb import safety  # noqa: E402
from SpacingRegistrationWeb.safety import UnsafeHostError, UploadError, safe_file_name, save_uploads  # noqa: E402


def upload(name, data: bytes, size=None, chunked=False):
    return {"name": name, "size": len(data) if size is None else size, "type": "application/octet-stream",
            "content": [data[:3], data[3:]] if chunked else data}


class HostTest(unittest.TestCase):
    def test_loopback_is_accepted_silently(self):
        for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
            with self.subTest(host):
                self.assertIsNone(safety.check_host(host, 8080, allow_remote=False))

    def test_other_hosts_need_the_flag_that_names_the_risk(self):
        for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
            with self.subTest(host):
                with self.assertRaises(UnsafeHostError) as caught:
                    safety.check_host(host, 8080, allow_remote=False)
                self.assertIn("--allow-remote", str(caught.exception))
                self.assertIn("no login", str(caught.exception))
                warning = safety.check_host(host, 8080, allow_remote=True)
                self.assertIn(f"listening on {host}", warning)
                self.assertIn("anyone who can reach", warning)


class FileNameTest(unittest.TestCase):
    def test_names_lose_folders_control_and_shell_characters(self):
        cases = {
            "../../etc/passwd": "passwd",
            "..\\..\\Windows\\win.ini": "win.ini",
            "/absolute/fixed.nii.gz": "fixed.nii.gz",
            "C:\\data\\moving.nrrd": "moving.nrrd",
            "a\x00b\x1f.nii": "ab.nii",
            ".bashrc": "_bashrc",
            "$(rm -rf ~);x.mha": "_(rm -rf _)_x.mha",
            "scan (1).nii": "scan (1).nii",
            "x" * 300 + ".nii.gz": "x" * 193 + ".nii.gz",
        }
        for given, expected in cases.items():
            with self.subTest(given[:40]):
                self.assertEqual(safe_file_name(given), expected)

    def test_unusable_names_are_refused(self):
        for given in ("", "   ", ".", "..", "../..", "/", None, 42):
            with self.subTest(repr(given)), self.assertRaises(UploadError):
                safe_file_name(given)


class UploadTest(unittest.TestCase):
    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="sr-upload-"))
        self.addCleanup(shutil.rmtree, self.root, True)
        self.folder = self.root / "server" / "upload-1"
        self.folder.mkdir(parents=True)

    def everything(self):
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))

    def test_files_are_written_only_inside_the_folder(self):
        paths = save_uploads([upload("../../escape.nii", b"abc"), upload("/tmp/fixed.nrrd", b"defgh", chunked=True),
                              upload("..\\..\\moving.nrrd", b"ij"), upload("fixed.nrrd", b"kl")], self.folder)
        self.assertEqual([p.name for p in paths], ["escape.nii", "fixed.nrrd", "moving.nrrd", "fixed-1.nrrd"])
        self.assertTrue(all(p.parent == self.folder.resolve() for p in paths))
        self.assertEqual(paths[1].read_bytes(), b"defgh")
        self.assertEqual(self.everything(), ["server", "server/upload-1", "server/upload-1/escape.nii",
                                             "server/upload-1/fixed-1.nrrd", "server/upload-1/fixed.nrrd",
                                             "server/upload-1/moving.nrrd"])
        self.assertEqual(oct(paths[0].stat().st_mode & 0o777), "0o600")

    def test_size_limit(self):
        for files, expected in (([upload("a.nii", b"x" * 11)], "more than the limit"),  # the real size
                                ([upload("a.nii", b"x", size=11)], "more than the limit"),  # declared, checked first
                                ([upload("a.nii", b"x" * 6), upload("b.nii", b"y" * 6, size=0)], "more than the limit")):
            with self.subTest(expected), self.assertRaisesRegex(UploadError, expected):
                save_uploads(files, self.folder, max_bytes=10)
        self.assertEqual(list(self.folder.iterdir()), [])

    def test_malformed_requests_get_an_error(self):
        cases = [None, "fixed.nii", 42, [], [1, 2], [{"name": "a.nii"}], [{"name": "a.nii", "content": "text"}],
                 [{"name": "a.nii", "content": [b"a", 3]}], [{"content": b"abc"}], [upload("a.nii", b"abc", size=9)],
                 [upload("ok.nii", b"abc"), upload("..", b"abc")]]
        for files in cases:
            with self.subTest(repr(files)[:60]), self.assertRaises(UploadError) as caught:
                save_uploads(files, self.folder)
            self.assertEqual(len(str(caught.exception).splitlines()), 1)
        self.assertEqual(list(self.folder.iterdir()), [])  # all or nothing

    def test_an_existing_file_or_link_is_never_written_through(self):
        outside = self.root / "outside.txt"
        outside.write_text("keep")
        os.symlink(outside, self.folder / "link.nii")
        with self.assertRaisesRegex(UploadError, "leads outside the upload folder"):
            save_uploads([upload("first.nii", b"1"), upload("link.nii", b"overwritten")], self.folder)
        self.assertEqual(outside.read_text(), "keep")
        self.assertEqual(sorted(p.name for p in self.folder.iterdir()), ["link.nii"])  # first.nii removed again

    def test_headers_pointing_outside_the_upload_are_refused(self):
        secret = self.root / "secret.raw"
        secret.write_bytes(b"\0" * 8)
        cases = {
            "abs.mhd": f"NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = {secret}\n",
            "rel.mhd": "NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = ../../secret.raw\n",
            "rel.nhdr": "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: ../../secret.raw\n\n",
        }
        for name, header in cases.items():
            with self.subTest(name), self.assertRaisesRegex(UploadError, "outside the upload"):
                save_uploads([upload(name, header.encode())], self.folder)
            self.assertEqual(list(self.folder.iterdir()), [])
        local = "NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = own.raw\n"
        paths = save_uploads([upload("own.mhd", local.encode()), upload("own.raw", b"\0" * 8)], self.folder)
        self.assertEqual(len(paths), 2)


class ServerOptionsTest(unittest.TestCase):
    """python -m SpacingRegistrationWeb: the options, and the refusal before anything starts."""

    def test_default_is_loopback_and_a_remote_host_is_refused_in_one_line(self):
        sys.path.insert(0, str(ROOT / "SpacingRegistration"))
        from SpacingRegistrationWeb.app import parseArguments

        options = parseArguments([])
        self.assertEqual((options.host, options.allow_remote), ("127.0.0.1", False))
        self.assertEqual(parseArguments(["--max-upload-mb", "5"]).max_upload_mb, 5.0)
        completed = subprocess.run([sys.executable, "-m", "SpacingRegistrationWeb", "--host", "0.0.0.0", "--no-sample"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=120,
                                   env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'SpacingRegistration'}"})
        self.assertEqual(completed.returncode, 2, completed.stderr)
        self.assertEqual(len(completed.stderr.strip().splitlines()), 1, completed.stderr)
        self.assertIn("refusing to listen on 0.0.0.0", completed.stderr)
        self.assertNotIn("Traceback", completed.stderr)



class WebAppUploadTest(unittest.TestCase):
    """The real web application (trame-slicer scene, no browser): damaged, hostile or malformed uploads and typed
    paths give one message in the page; the scene and everything outside the server's folder are unchanged."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, str(ROOT / "SpacingRegistration"))
        from SpacingRegistrationWeb.app import SpacingRegistrationWebApp

        cls.root = Path(tempfile.mkdtemp(prefix="sr-webapp-"))
        cls.server_folder = cls.root / "server"
        cls.app = SpacingRegistrationWebApp(outputDir=cls.server_folder, loadSample=False)
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 8, 8)).astype("float32"))
        sitk.WriteImage(image, str(cls.root / "whole.nii.gz"), useCompression=True)
        cls.whole = (cls.root / "whole.nii.gz").read_bytes()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def outside(self):
        return sorted(str(p) for p in self.root.rglob("*") if self.server_folder not in p.parents)

    def test_bad_uploads_and_paths_are_messages(self):
        scene, before = self.app.scene, self.outside()
        nodes = scene.GetNumberOfNodes()
        cases = [
            ([upload("../../cut.nii.gz", self.whole[:-20])], "is truncated"),
            ([upload("../escape.nii", b"not an image at all")], "is not a NIfTI"),
            ("garbage", "malformed upload request"),
            ([{"name": "x.nii"}], "carries no file content"),
            ([upload("..", b"abc")], "no usable characters"),
        ]
        for files, expected in cases:
            with self.subTest(expected):
                self.app.workflow.clearError()
                self.app.onUpload(files)
                self.assertIn(expected, self.app.workflow.error)
                self.assertEqual(len(self.app.workflow.error.splitlines()), 1)
        sitk.WriteImage(sitk.ReadImage(str(self.root / "whole.nii.gz")), str(self.root / "cut.nii"))
        (self.root / "cut.nii").write_bytes((self.root / "cut.nii").read_bytes()[:-100])
        self.app.loadPaths([str(self.root / "cut.nii"), str(self.root / "absent.nrrd")])
        self.assertIn("cut.nii is truncated", self.app.workflow.error)
        self.assertEqual(scene.GetNumberOfNodes(), nodes)
        self.assertEqual(self.outside(), sorted(before + [str(self.root / "cut.nii")]))

    def test_a_whole_upload_loads(self):
        nodes = self.app.scene.GetNumberOfNodes()
        self.app.onUpload([upload("../../whole.nii.gz", self.whole)])
        self.assertEqual(self.app.workflow.error, "")
        self.assertGreater(self.app.scene.GetNumberOfNodes(), nodes)
        saved = [p for p in self.server_folder.rglob("whole.nii.gz")]
        self.assertEqual(len(saved), 1)
        self.assertEqual(saved[0].read_bytes(), self.whole)


if __name__ == "__main__":
    unittest.main()
