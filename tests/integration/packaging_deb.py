"""The Debian package, built as an administrator would (packaging/build-deb.sh: a release
build with dpkg-buildflags, then CPack): its exact contents and control data (dpkg-deb), lintian
with nothing to report, the unit verified by systemd-analyze, and an install into a throwaway
root with `dpkg --root` (maintainer scripts run chrootless with DPKG_ROOT, so no root is
needed): the user and the store exist, `mailkeep --check-config` from the installed tree passes
on the installed config, remove keeps the conffiles, purge removes them and keeps the mail."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

SRC = os.environ["MK_SOURCE_DIR"]
ENV = dict(os.environ, PATH=os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
           LC_ALL="C.UTF-8")

# Every entry of the package: mode, owner, path. A file added to the install rules must be
# added here too.
CONTENTS = """
drwxr-xr-x root/root ./etc/
drwxr-xr-x root/root ./etc/mailkeep/
-rw-r--r-- root/root ./etc/mailkeep/mailkeep.conf
drwxr-xr-x root/root ./etc/pam.d/
-rw-r--r-- root/root ./etc/pam.d/mailkeep
drwxr-xr-x root/root ./lib/
drwxr-xr-x root/root ./lib/systemd/
drwxr-xr-x root/root ./lib/systemd/system/
-rw-r--r-- root/root ./lib/systemd/system/mailkeep.service
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/lib/
drwxr-xr-x root/root ./usr/lib/sysusers.d/
-rw-r--r-- root/root ./usr/lib/sysusers.d/mailkeep.conf
drwxr-xr-x root/root ./usr/lib/tmpfiles.d/
-rw-r--r-- root/root ./usr/lib/tmpfiles.d/mailkeep.conf
drwxr-xr-x root/root ./usr/libexec/
drwxr-xr-x root/root ./usr/libexec/mailkeep/
-rwxr-xr-x root/root ./usr/libexec/mailkeep/cert-deploy
drwxr-xr-x root/root ./usr/sbin/
-rwxr-xr-x root/root ./usr/sbin/mailkeep
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/doc/
drwxr-xr-x root/root ./usr/share/doc/mailkeep/
-rw-r--r-- root/root ./usr/share/doc/mailkeep/changelog.Debian.gz
-rw-r--r-- root/root ./usr/share/doc/mailkeep/copyright
drwxr-xr-x root/root ./usr/share/doc/mailkeep/examples/
-rw-r--r-- root/root ./usr/share/doc/mailkeep/examples/postfix-main.cf
drwxr-xr-x root/root ./usr/share/lintian/
drwxr-xr-x root/root ./usr/share/lintian/overrides/
-rw-r--r-- root/root ./usr/share/lintian/overrides/mailkeep
drwxr-xr-x root/root ./usr/share/man/
drwxr-xr-x root/root ./usr/share/man/man5/
-rw-r--r-- root/root ./usr/share/man/man5/mailkeep.conf.5.gz
drwxr-xr-x root/root ./usr/share/man/man8/
-rw-r--r-- root/root ./usr/share/man/man8/mailkeep.8.gz
"""


def run(args, **kw):
    kw.setdefault("timeout", 600)
    kw.setdefault("env", ENV)
    return subprocess.run(args, capture_output=True, text=True, **kw)


def project_version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        return re.search(r"project\(mailkeep VERSION ([0-9.]+)", f.read()).group(1)


class DebPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mk-deb-")
        out = os.path.join(cls.tmp, "out")
        r = run([os.path.join(SRC, "packaging", "build-deb.sh"), out],
                env=dict(ENV, MK_DEB_BUILD_DIR=os.path.join(cls.tmp, "build")), timeout=800)
        if r.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)  # tearDownClass does not run after this
            raise AssertionError("build-deb.sh failed:\n" + r.stdout[-4000:] + r.stderr[-4000:])
        cls.deb = r.stdout.strip().splitlines()[-1]
        assert cls.deb == glob.glob(os.path.join(out, "*.deb"))[0], r.stdout

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def field(self, name):
        r = run(["dpkg-deb", "-f", self.deb, name])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def test_file_name_and_version(self):
        version = project_version()
        self.assertEqual(os.path.basename(self.deb), "mailkeep_%s-1_amd64.deb" % version)
        self.assertEqual(self.field("Version"), version + "-1")
        self.assertEqual(self.field("Package"), "mailkeep")
        self.assertEqual(self.field("Section"), "mail")

    def test_contents(self):
        r = run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(r.returncode, 0, r.stderr)
        got = [" ".join((f[0], f[1], f[5])) for f in (l.split() for l in r.stdout.splitlines())]
        self.assertEqual(got, CONTENTS.strip().splitlines())

    def test_control(self):
        depends = [d.strip() for d in self.field("Depends").split(",")]
        names = {re.match(r"[a-z0-9.+-]+", d).group(0) for d in depends}
        for need in ("ssl-cert", "libuv1", "libgnutls30", "libpam0g", "libpam-runtime", "libc6"):
            self.assertIn(need, names)
        self.assertIn("systemd | systemd-standalone-sysusers | systemd-sysusers", depends)
        ctl = os.path.join(self.tmp, "control")
        r = run(["dpkg-deb", "-e", self.deb, ctl])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(os.listdir(ctl)),
                         ["conffiles", "control", "md5sums", "postinst", "postrm", "prerm"])
        with open(os.path.join(ctl, "conffiles")) as f:
            self.assertEqual(f.read(), "/etc/mailkeep/mailkeep.conf\n/etc/pam.d/mailkeep\n")
        for script in ("postinst", "postrm", "prerm"):
            path = os.path.join(ctl, script)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o755)
            self.assertEqual(run(["sh", "-n", path]).returncode, 0, script)

    def test_installed_files_are_the_sources(self):
        """What the package installs is what packaging/ keeps, byte for byte."""
        x = os.path.join(self.tmp, "x-sources")
        self.assertEqual(run(["dpkg-deb", "-x", self.deb, x]).returncode, 0)
        pairs = [("etc/mailkeep/mailkeep.conf", "mailkeep.conf"),
                 ("etc/pam.d/mailkeep", "pam/mailkeep"),
                 ("lib/systemd/system/mailkeep.service", "systemd/mailkeep.service"),
                 ("usr/lib/sysusers.d/mailkeep.conf", "systemd/sysusers.conf"),
                 ("usr/lib/tmpfiles.d/mailkeep.conf", "systemd/tmpfiles.conf"),
                 ("usr/libexec/mailkeep/cert-deploy", "cert-deploy"),
                 ("usr/share/doc/mailkeep/examples/postfix-main.cf", "postfix-main.cf")]
        for installed, source in pairs:
            with self.subTest(installed=installed):
                with open(os.path.join(x, installed), "rb") as a, \
                        open(os.path.join(SRC, "packaging", source), "rb") as b:
                    self.assertEqual(a.read(), b.read())
        r = run(["zcat", os.path.join(x, "usr/share/man/man5/mailkeep.conf.5.gz")])
        with open(os.path.join(SRC, "packaging/man/mailkeep.conf.5")) as f:
            self.assertEqual(r.stdout, f.read())

    @unittest.skipIf(shutil.which("lintian") is None, "lintian is not installed")
    def test_lintian_is_clean(self):
        r = run(["lintian", "--no-cfg", "-I", "-E", "--pedantic",
                 "--fail-on", "error,warning,info,pedantic", self.deb])
        out = [l for l in (r.stdout + r.stderr).splitlines()
               if l != "running with root privileges is not recommended!"]
        self.assertEqual((r.returncode, out), (0, []))

    def unit_root(self):
        """The package's tree plus the host's units (the targets it is ordered against), for
        systemd-analyze --root."""
        v = tempfile.mkdtemp(prefix="verify-", dir=self.tmp)
        self.assertEqual(run(["dpkg-deb", "-x", self.deb, v]).returncode, 0)
        for unit in glob.glob("/lib/systemd/system/*"):
            dst = os.path.join(v, "lib/systemd/system", os.path.basename(unit))
            if not os.path.lexists(dst):
                if os.path.islink(unit):
                    os.symlink(os.readlink(unit), dst)
                elif os.path.isfile(unit):
                    shutil.copy(unit, dst)
        os.makedirs(os.path.join(v, "bin"))
        shutil.copy("/bin/kill", os.path.join(v, "bin", "kill"))
        return v

    @unittest.skipIf(shutil.which("systemd-analyze") is None, "systemd-analyze is not installed")
    def test_unit_verifies(self):
        """No warning at all: systemd-analyze exits 0 even for an unknown key, so the output
        must be empty. Documentation= man pages resolve to the package's pages."""
        v = self.unit_root()
        env = dict(ENV, MANPATH=os.path.join(v, "usr/share/man"))
        r = run(["systemd-analyze", "verify", "--root=" + v, "mailkeep.service"], env=env)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
        # The same check reports a broken unit, so an empty output means something.
        path = os.path.join(v, "lib/systemd/system/mailkeep.service")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("ProtectSystem=strict", "ProtectSystem=stric"))
        r = run(["systemd-analyze", "verify", "--root=" + v, "mailkeep.service"], env=env)
        self.assertIn("Failed to parse protect system value", r.stderr)

    @unittest.skipIf(shutil.which("systemd-analyze") is None, "systemd-analyze is not installed")
    def test_unit_sandbox_exposure(self):
        v = self.unit_root()
        r = run(["systemd-analyze", "security", "--offline=yes", "--root=" + v,
                 "--no-pager", "mailkeep.service"])
        m = re.search(r"Overall exposure level for mailkeep.service: ([0-9.]+)", r.stdout)
        self.assertIsNotNone(m, r.stdout[-2000:] + r.stderr)
        print("systemd-analyze security: exposure", m.group(1))
        self.assertLessEqual(float(m.group(1)), 3.0)

    def dpkg(self, root, *args):
        return run(["dpkg", "--root=" + root, "--force-not-root", "--force-script-chrootless",
                    "--force-depends", "--log=/dev/null"] + list(args))

    @unittest.skipIf(shutil.which("systemd-sysusers") is None,
                     "systemd-sysusers (package systemd), which the postinst runs, is missing")
    def test_install_check_config_remove_purge(self):
        root = os.path.join(self.tmp, "root")
        for d in ("var/lib/dpkg/updates", "var/lib/dpkg/info"):
            os.makedirs(os.path.join(root, d))
        open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
        r = self.dpkg(root, "-i", self.deb)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.dpkg(root, "-s", "mailkeep")
        self.assertIn("Status: install ok installed", r.stdout)

        # postinst: the user from sysusers.d, the store from tmpfiles.d, in that root only.
        with open(os.path.join(root, "etc/passwd")) as f:
            self.assertRegex(f.read(), r"(?m)^mailkeep:x:(\d+):(\d+):mailkeep mail server:"
                             r"/var/lib/mailkeep:/usr/sbin/nologin$")
        for d, mode in (("var/lib/mailkeep", 0o750), ("var/lib/mailkeep/mail", 0o700)):
            self.assertEqual(os.stat(os.path.join(root, d)).st_mode & 0o7777, mode, d)

        # The installed binary checks the installed configuration.
        binary = os.path.join(root, "usr/sbin/mailkeep")
        conf = os.path.join(root, "etc/mailkeep/mailkeep.conf")
        r = run([binary, "--version"])
        self.assertEqual(r.stdout, "mailkeep %s\n" % project_version())
        r = run([binary, "--check-config", "-c", conf])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1], conf + ": OK")
        # ... and refuses a broken one with its line.
        with open(conf, "a") as f:
            f.write("[listener imap]\nprotocol = imap\n")
        r = run([binary, "--check-config", "-c", conf])
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, re.escape(conf) + r":\d+: ")

        # Remove keeps the conffiles (the edited one too), purge removes them; the mail stays.
        mail = os.path.join(root, "var/lib/mailkeep/mail/alice/cur/1.m:2,S")
        os.makedirs(os.path.dirname(mail))
        open(mail, "w").close()
        r = self.dpkg(root, "-r", "mailkeep")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertFalse(os.path.exists(binary))
        self.assertTrue(os.path.exists(conf))
        self.assertIn("Status: deinstall ok config-files", self.dpkg(root, "-s", "mailkeep").stdout)
        r = self.dpkg(root, "-P", "mailkeep")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertFalse(os.path.exists(conf))
        self.assertFalse(os.path.exists(os.path.join(root, "etc/pam.d/mailkeep")))
        self.assertTrue(os.path.exists(mail))
        self.assertNotEqual(self.dpkg(root, "-s", "mailkeep").returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
