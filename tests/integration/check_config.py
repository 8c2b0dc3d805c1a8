"""mailkeep --check-config: the example config in packaging/ passes; every broken example in
tests/configs/ fails with exactly the FILE:LINE: lines in its .expected file."""
import glob
import os
import subprocess
import sys
import unittest

SRC = os.environ["MK_SOURCE_DIR"]
BIN = os.environ["MK_BINARY"]


def check(path, cwd):
    return subprocess.run([BIN, "--check-config", "-c", path], cwd=cwd, capture_output=True,
                          text=True, timeout=30)


class CheckConfig(unittest.TestCase):
    def test_example_config_passes(self):
        r = check("packaging/mailkeep.conf", SRC)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1], "packaging/mailkeep.conf: OK")

    def test_broken_examples_name_the_line(self):
        confdir = os.path.join(SRC, "tests", "configs")
        files = sorted(glob.glob(os.path.join(confdir, "*.conf")))
        self.assertGreaterEqual(len(files), 6)
        for conf in files:
            name = os.path.basename(conf)
            with self.subTest(conf=name):
                with open(conf[:-5] + ".expected") as f:
                    expected = f.read()
                r = check(name, confdir)
                self.assertEqual(r.returncode, 1)
                self.assertEqual(r.stdout, expected)

    def test_missing_file(self):
        r = check("/nonexistent/mailkeep.conf", SRC)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "/nonexistent/mailkeep.conf: cannot open: "
                         "No such file or directory\n")

    def test_readme_lists_every_setting(self):
        """The README's table is made from --settings; keep them equal."""
        r = subprocess.run([BIN, "--settings"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        with open(os.path.join(SRC, "README.md")) as f:
            readme = f.read()
        for line in r.stdout.splitlines():
            section, key, default, doc = line.split("\t")
            name = "[%s NAME]" % section if section in ("listener", "user") else "[%s]" % section
            shown = "`%s`" % default if default else "\u2014"
            row = "| %s | `%s` | %s | %s |" % (name, key, shown, doc)
            self.assertIn(row, readme, "run tests/support/update-readme-settings.py")

    def test_cli(self):
        r = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("mailkeep "))
        r = subprocess.run([BIN, "--bogus"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: mailkeep", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
