"""The man pages (packaging/man/, hand-written roff) against the binary, so they never drift:
mailkeep.conf(5) lists exactly the settings `mailkeep --settings` prints, each with its
default; mailkeep(8) documents every option of `mailkeep --help`; both render without a groff
warning; the example in mailkeep.conf(5) passes --check-config."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ["MK_SOURCE_DIR"]
MAN = os.path.join(SRC, "packaging", "man")
SECTIONS = {"[server]": "server", "[tls]": "tls", "[listener NAME]": "listener",
            "[user NAME]": "user"}


def daemon_binary():
    """The mailkeep binary; mk-testd (the same daemon code) while mailkeep does not link."""
    for var in ("MK_BINARY", "MK_TESTD"):
        path = os.environ.get(var, "")
        if path and os.path.exists(path):
            return path
    raise RuntimeError("neither MK_BINARY nor MK_TESTD names a built binary")


BIN = daemon_binary()


def read(name):
    with open(os.path.join(MAN, name), encoding="utf-8") as f:
        return f.read()


def unroff(text):
    """The characters a reader sees for a roff fragment (the escapes these pages use)."""
    text = re.sub(r"\\f[BIRP]|\\f\(CR", "", text)
    return text.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")


def render(lines):
    """The running text of roff lines as a reader sees it: macro arguments (.B, .BR, ...)
    joined, font escapes dropped, lines joined with one space."""
    words = []
    for line in lines:
        m = re.fullmatch(r"\.([BI]|BR|RB|IR|RI|BI|IB) (.*)", line)
        if m:
            args = re.findall(r'"([^"]*)"|(\S+)', m.group(2))
            args = [a or b for a, b in args]
            line = " ".join(args) if len(m.group(1)) == 1 else "".join(args)
        elif line.startswith("."):
            continue
        words.append(unroff(line))
    return re.sub(r"\s+", " ", " ".join(words)).strip()


def man_settings(page):
    """{(section, key): (default, text)} from the SETTINGS section; default '' where the page
    says No default; text is the entry's running text after the default."""
    body = page.split("\n.SH SETTINGS\n", 1)[1].split("\n.SH ", 1)[0]
    found = {}
    section = None
    lines = body.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.fullmatch(r'\.SS "(.*)"', line)
        if m:
            section = SECTIONS[m.group(1)]
        elif line == ".TP":
            key_line, default_line = lines[i + 1], lines[i + 2]
            m = re.fullmatch(r"\.B (\S+)", key_line)
            if not m:
                raise AssertionError("a .TP in SETTINGS without '.B key': %r" % key_line)
            key = m.group(1)
            m = re.fullmatch(r"Default: \\fB(.*)\\fR\.", default_line)
            if m:
                default = unroff(m.group(1))
            elif default_line == "No default.":
                default = ""
            else:
                raise AssertionError("%s: no 'Default: ...' line: %r" % (key, default_line))
            if (section, key) in found:
                raise AssertionError("%s.%s documented twice" % (section, key))
            j = i + 3
            while j < len(lines) and lines[j] not in (".TP",) and not lines[j].startswith(".SS"):
                j += 1
            found[(section, key)] = (default, render(lines[i + 3:j]))
            i = j - 1
        i += 1
    return found


class ManPages(unittest.TestCase):
    def test_conf_page_lists_every_setting_with_its_default(self):
        """Every setting, its default, and its meaning as --settings words it (the page may
        add sentences after it)."""
        r = subprocess.run([BIN, "--settings"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        binary = {}
        for line in r.stdout.splitlines():
            section, key, default, doc = line.split("\t")
            binary[(section, key)] = (default, doc)
        self.assertGreaterEqual(len(binary), 30)
        page = man_settings(read("mailkeep.conf.5"))
        self.assertEqual(sorted(set(binary) - set(page)), [],
                         "settings mailkeep knows that mailkeep.conf(5) does not list")
        self.assertEqual(sorted(set(page) - set(binary)), [],
                         "settings in mailkeep.conf(5) that mailkeep does not know")
        for k in sorted(binary):
            self.assertEqual(page[k][0], binary[k][0], "default of %s.%s" % k)
            self.assertTrue(page[k][1].startswith(binary[k][1]),
                            "%s.%s: the page says %r, --settings %r"
                            % (k + (page[k][1], binary[k][1])))

    def test_parser_sees_a_drift(self):
        """The check above can fail: a wrong default, other words, an extra key differ."""
        page = read("mailkeep.conf.5")
        good = man_settings(page)
        bad = man_settings(page.replace("Default: \\fB10000\\fR.", "Default: \\fB9999\\fR."))
        self.assertEqual(bad[("server", "max_connections")][0], "9999")
        self.assertNotEqual(good, bad)
        reworded = man_settings(page.replace("Upper bound of that delay.", "Upper bound."))
        self.assertEqual(reworded[("server", "auth_fail_delay_max_ms")][1], "Upper bound.")
        extra = page.replace(".SS \"[tls]\"\n",
                             ".TP\n.B no_such_key\nNo default.\nx\n.SS \"[tls]\"\n")
        self.assertIn(("server", "no_such_key"), man_settings(extra))
        self.assertEqual(render([".BR mailkeep (8),", "and", '.B "a b"', "x\\-y"]),
                         "mailkeep(8), and a b x-y")

    def test_mailkeep_page_documents_every_option(self):
        r = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        options = sorted(set(re.findall(r"--[a-z][a-z-]*", r.stdout)))
        self.assertIn("--check-config", options)
        page = read("mailkeep.8")
        opts = page.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
        for opt in options:
            self.assertIn(opt.replace("-", "\\-"), opts, "mailkeep(8) OPTIONS lacks " + opt)

    @unittest.skipIf(shutil.which("groff") is None, "groff is not installed")
    def test_pages_render_without_warnings(self):
        for name in ("mailkeep.8", "mailkeep.conf.5"):
            with self.subTest(page=name):
                r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8",
                                    os.path.join(MAN, name)],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_conf_page_example_passes_check_config(self):
        """With the real binary: it must serve the example's protocols."""
        binary = os.environ["MK_BINARY"]
        page = read("mailkeep.conf.5")
        example = page.split("\n.SH EXAMPLE\n", 1)[1].split("\n.fi\n", 1)[0]
        example = example.split(".ft CR\n", 1)[1].rsplit("\n.ft", 1)[0]
        with tempfile.TemporaryDirectory(prefix="mk-man-") as d:
            path = os.path.join(d, "example.conf")
            with open(path, "w") as f:
                f.write(unroff(example) + "\n")
            r = subprocess.run([binary, "--check-config", "-c", path], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(r.stdout.splitlines()[-1], path + ": OK")


def ini_values(path, section):
    """key -> value of SECTION in an INI-style file like mailkeep.conf (comments dropped)."""
    out, cur = {}, None
    with open(path) as f:
        for line in f:
            line = re.split(r"(?:^|\s)[;#]", line, 1)[0].strip()
            if line.startswith("["):
                cur = line.strip("[]")
            elif "=" in line and cur == section:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out


class PostfixExample(unittest.TestCase):
    """packaging/postfix-main.cf, mailkeep(8) MTA INTEGRATION and the example config agree."""

    def test_example_delivers_where_mailkeep_reads(self):
        example = {}
        with open(os.path.join(SRC, "packaging", "postfix-main.cf")) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    example[k.strip()] = v.strip()
        server = ini_values(os.path.join(SRC, "packaging", "mailkeep.conf"), "server")
        self.assertNotIn("%u", server["mail_root"])
        self.assertEqual(example["virtual_mailbox_base"], server["mail_root"])
        self.assertEqual(example["virtual_uid_maps"], "static:MAILKEEP_UID")
        self.assertEqual(example["virtual_minimum_uid"], "MAILKEEP_UID")
        page = read("mailkeep.8")
        mta = page.split("\n.SH MTA INTEGRATION\n", 1)[1].split("\n.SH ", 1)[0]
        block = mta.split(".ft CR\n", 1)[1].split("\n.ft", 1)[0]
        shown = {}
        for line in block.splitlines():
            k, v = line.split("=", 1)
            shown[k.strip()] = re.sub(r"\b([UG]ID)\b", r"MAILKEEP_\1", v.strip())
        self.assertGreaterEqual(len(shown), 6)
        for k, v in shown.items():
            self.assertEqual(example.get(k), v, k)


if __name__ == "__main__":
    print("daemon binary:", BIN, file=sys.stderr)
    unittest.main(verbosity=2)
