"""The systemd unit's privilege set, run for real: mailkeep started as root with exactly the
unit's CapabilityBoundingSet and NoNewPrivileges (setpriv, as systemd applies them) binds a port
below 1024, drops to mail_user and serves a connection; its PAM helper keeps root with just
those capabilities and answers a login through the package's /etc/pam.d/mailkeep (via
pam_confdir, pam_unix alone behind it) with a PAM verdict; and root with those capabilities
(no CAP_DAC_OVERRIDE) reads /etc/shadow, which pam_unix needs. Without CAP_SETGID the drop fails
and mailkeep refuses to start, so the check can fail. Needs root (a *_root test: CI runs it as
root; elsewhere it skips)."""
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

SRC = os.environ["MK_SOURCE_DIR"]
BIN = os.environ["MK_BINARY"]
UNIT = os.path.join(SRC, "packaging", "systemd", "mailkeep.service")
TIMEOUT = 30.0


def unit_value(key):
    with open(UNIT) as f:
        for line in f:
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip()
    raise AssertionError("%s= not in the unit" % key)


def unit_caps():
    """CapabilityBoundingSet= as setpriv names them: net_bind_service, setuid, ..."""
    return [c.lower()[len("cap_"):] for c in unit_value("CapabilityBoundingSet").split()]


def free_privileged_port():
    for port in range(990, 600, -1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port below 1024")


class Daemon:
    def __init__(self, conf, caps):
        bounding = "-all," + ",".join("+" + c for c in caps)
        self.proc = subprocess.Popen(
            ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs",
             "--", BIN, "-f", "-c", conf],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # EOF
            self.cond.notify_all()

    def wait(self, pattern):
        """The first log line matching PATTERN; None if the daemon's log ends first."""
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                for line in self.lines:
                    if line is None:
                        return None
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %r in the log:\n%s" % (
                        pattern, "\n".join(l for l in self.lines[-30:] if l)))
                self.cond.wait(left)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=TIMEOUT)
        self.thread.join(TIMEOUT)
        self.proc.stderr.close()
        return code


CAP_NUMBERS = {"setgid": 6, "setuid": 7, "net_bind_service": 10, "audit_write": 29}


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


@unittest.skipIf(os.geteuid() != 0, "needs root (a *_root test)")
@unittest.skipIf(shutil.which("setpriv") is None, "setpriv (util-linux) is not installed")
class UnitPrivileges(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mk-sandbox-")
        os.chmod(self.dir, 0o755)
        nobody = pwd.getpwnam("nobody")
        mail = os.path.join(self.dir, "mail")
        os.makedirs(mail)
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        # The package's PAM file, and a common-auth/common-account that ask pam_unix alone.
        pamd = os.path.join(self.dir, "pam.d")
        os.makedirs(pamd)
        shutil.copy(os.path.join(SRC, "packaging", "pam", "mailkeep"), pamd)
        for name, kind in (("common-auth", "auth"), ("common-account", "account")):
            with open(os.path.join(pamd, name), "w") as f:
                f.write("%s required pam_unix.so\n" % kind)
        self.port = free_privileged_port()
        self.conf = os.path.join(self.dir, "mailkeep.conf")
        with open(self.conf, "w") as f:
            f.write("[server]\nmail_root = %s/%%u\nmail_user = nobody\npam_service = mailkeep\n"
                    "pam_confdir = %s\nauth_fail_delay_ms = 0\nauth_fail_delay_max_ms = 0\n\n"
                    "[listener pop3]\nprotocol = pop3\naddress = 127.0.0.1\nport = %d\n"
                    % (mail, pamd, self.port))

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_unit_capabilities_are_enough(self):
        caps = unit_caps()
        self.assertEqual(sorted(caps), ["audit_write", "net_bind_service", "setgid", "setuid"])
        self.assertEqual(unit_value("NoNewPrivileges"), "yes")
        bounding = "-all," + ",".join("+" + c for c in caps)
        r = subprocess.run(["setpriv", "--bounding-set", bounding, "--inh-caps", "-all",
                            "--no-new-privs", "--", "head", "-c", "1", "/etc/shadow"],
                           capture_output=True, timeout=TIMEOUT)
        self.assertEqual((r.returncode, len(r.stdout)), (0, 1), r.stderr)
        mask = sum(1 << CAP_NUMBERS[c] for c in caps)

        d = Daemon(self.conf, caps)
        try:
            self.assertIsNotNone(d.wait(r"event=started"), "\n".join(filter(None, d.lines)))
            self.assertIsNotNone(d.wait(r"dropped privileges to user=nobody"))
            st = status(d.proc.pid)
            nobody = pwd.getpwnam("nobody")
            self.assertEqual(st["Uid"].split(), [str(nobody.pw_uid)] * 4)
            self.assertEqual(st["NoNewPrivs"].strip(), "1")
            self.assertEqual(int(st["CapEff"], 16), 0)
            self.assertEqual(int(st["CapBnd"], 16), mask)
            # The PAM helper's supervisor: a child that kept root, and only the unit's caps.
            helpers = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    ch = status(int(pid))
                except OSError:
                    continue
                if ch.get("PPid", "").strip() == str(d.proc.pid):
                    helpers.append(ch)
            root_helpers = [h for h in helpers if h["Uid"].split()[0] == "0"]
            self.assertEqual(len(root_helpers), 1, helpers)
            h = root_helpers[0]
            self.assertEqual((int(h["CapEff"], 16), int(h["CapBnd"], 16)), (mask, mask))
            self.assertEqual(h["NoNewPrivs"].strip(), "1")

            s = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"+OK"))
            s.sendall(b"USER nobody\r\n")
            self.assertTrue(f.readline().startswith(b"+OK"))
            s.sendall(b"PASS not-the-password\r\n")
            # The helper ran the stack to a verdict: a failure, not "temporarily unavailable".
            self.assertEqual(f.readline(), b"-ERR [AUTH] Authentication failed.\r\n")
            s.sendall(b"QUIT\r\n")
            self.assertTrue(f.readline().startswith(b"+OK"))
            f.close()
            s.close()
        finally:
            self.assertEqual(d.stop(), 0)

    def test_without_setgid_the_drop_fails(self):
        caps = [c for c in unit_caps() if c != "setgid"]
        d = Daemon(self.conf, caps)
        try:
            self.assertIsNotNone(d.wait(r"initgroups\(nobody, \d+\): Operation not permitted"))
        finally:
            self.assertNotEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
