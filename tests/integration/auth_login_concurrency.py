#!/usr/bin/env python3
"""A login never blocks the loop (issue 3, "Done means"): the real mailkeep binary on
127.0.0.1, PAM through the helper with a generated stack (pam_start_confdir): while one IMAP
client's LOGIN sits 2 s in a slow PAM module, another client's NOOP and LOGIN are answered at
once, and the slow login still succeeds afterwards. A wrong password is delayed and logged."""
import os
import pwd
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from mk_testlib import free_port

BIN = os.environ["MK_BINARY"]
PAM_MATRIX = os.environ["MK_PAM_MATRIX"]
PAM_TEST = os.environ["MK_PAM_TEST_MODULE"]
SERVICE = "mk-auth-it"
SLOW_MS = 2000



class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mk-auth-it-")
        os.chmod(self.dir, 0o755)
        mail = os.path.join(self.dir, "mail")
        os.mkdir(mail)
        mail_user = ""
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(mail, pw.pw_uid, pw.pw_gid)
            mail_user = "mail_user = nobody"
        cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        tmpl = os.path.join(self.dir, "cert.tmpl")
        with open(tmpl, "w") as f:
            f.write('cn = "127.0.0.1"\nexpiration_days = 2\ntls_www_server\nsigning_key\n')
        subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key],
                       check=True, capture_output=True, timeout=60)
        subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key,
                        "--template", tmpl, "--outfile", cert],
                       check=True, capture_output=True, timeout=60)
        pamd = os.path.join(self.dir, "pam.d")
        os.mkdir(pamd)
        passdb = os.path.join(self.dir, "passdb")
        with open(passdb, "w") as f:
            f.write(f"bob:secret:{SERVICE}\nslow:slowpw:{SERVICE}\n")
        with open(os.path.join(pamd, SERVICE), "w") as f:
            f.write(f"auth optional {PAM_TEST} slow_user=slow slow_ms={SLOW_MS}\n"
                    f"auth required {PAM_MATRIX} passdb={passdb}\n"
                    f"account required {PAM_MATRIX} passdb={passdb}\n")
        self.port = free_port()
        self.conf = os.path.join(self.dir, "mailkeep.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[server]
mail_root = {mail}/%u
{mail_user}
pam_service = {SERVICE}
pam_confdir = {pamd}
auth_fail_delay_ms = 300
auth_fail_delay_max_ms = 1000

[tls]
cert = {cert}
key = {key}

[listener imap]
protocol = imap
address = 127.0.0.1
port = {self.port}
tls = none
""")
        self.log = []
        self.cond = threading.Condition()

    def start(self):
        self.proc = subprocess.Popen([BIN, "-f", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_log("event=started")

    def _drain(self):
        for raw in self.proc.stderr:
            with self.cond:
                self.log.append(raw.decode("utf-8", "replace"))
                self.cond.notify_all()

    def wait_log(self, needle, timeout=30):
        with self.cond:
            if not self.cond.wait_for(lambda: any(needle in ln for ln in self.log), timeout):
                raise AssertionError(f"log never showed {needle!r}:\n" + "".join(self.log[-30:]))
        return [ln for ln in self.log if needle in ln]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.greeting = self.line(10)

    def send(self, data):
        self.sock.sendall(data)

    def line(self, timeout):
        """One CRLF-terminated line, waiting at most timeout seconds."""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout}s (have {self.buf!r})")
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def tagged(self, tag, timeout):
        while True:
            ln = self.line(timeout)
            if ln.startswith(tag + b" "):
                return ln

    def pending(self):
        """True when the server has sent nothing more (checked without waiting)."""
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        ready = sel.select(0)
        sel.close()
        return not ready and b"\r\n" not in self.buf

    def close(self):
        self.sock.close()


class LoginConcurrency(unittest.TestCase):
    def setUp(self):
        self.srv = Server()
        self.srv.start()

    def tearDown(self):
        self.srv.stop()

    def test_slow_login_blocks_nobody(self):
        a = Client(self.srv.port)
        b = Client(self.srv.port)
        self.assertTrue(a.greeting.startswith(b"* OK"))
        t0 = time.monotonic()
        a.send(b"a1 LOGIN slow slowpw\r\n")
        # the slow login is in PAM now; b's NOOP and LOGIN are answered at once
        b.send(b"b1 NOOP\r\n")
        noop = b.tagged(b"b1", 1.0)
        t_noop = time.monotonic() - t0
        self.assertTrue(noop.startswith(b"b1 OK"), noop)
        b.send(b"b2 LOGIN bob secret\r\n")
        login = b.tagged(b"b2", 1.5)
        t_login = time.monotonic() - t0
        self.assertTrue(login.startswith(b"b2 OK"), login)
        self.assertTrue(a.pending(), "the slow login answered too early")
        self.assertLess(t_login, SLOW_MS / 1000.0)
        slow = a.tagged(b"a1", 10)
        t_slow = time.monotonic() - t0
        self.assertTrue(slow.startswith(b"a1 OK"), slow)
        self.assertGreaterEqual(t_slow, SLOW_MS / 1000.0)
        print(f"# NOOP after {t_noop * 1000:.1f} ms, second LOGIN after {t_login * 1000:.1f} ms, "
              f"slow LOGIN after {t_slow * 1000:.0f} ms")
        self.srv.wait_log("user=slow rip=127.0.0.1 proto=imap mech=IMAP-LOGIN tls=no result=ok")
        a.close()
        b.close()

    def test_wrong_password_delayed_and_logged(self):
        c = Client(self.srv.port)
        t0 = time.monotonic()
        c.send(b"x1 LOGIN bob wrong\r\n")
        ans = c.tagged(b"x1", 10)
        took = time.monotonic() - t0
        self.assertTrue(ans.startswith(b"x1 NO [AUTHENTICATIONFAILED]"), ans)
        self.assertGreaterEqual(took, 0.3)
        line = self.srv.wait_log("user=bob rip=127.0.0.1 proto=imap mech=IMAP-LOGIN tls=no "
                                 "result=permfail")[0]
        self.assertIn("reason=pam_authenticate:\\x20Authentication\\x20failure", line)
        self.assertIn("failures=1 delay_ms=300", line)
        self.assertNotIn("wrong", line)
        c.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
