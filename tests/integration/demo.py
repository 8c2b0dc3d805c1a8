"""The README's first command, run the way a person would, but ending: packaging/demo.sh starts
mailkeep with the demo account and mail; we log in over each of its four listeners (IMAP with
STARTTLS, IMAPS, POP3 with STLS, POP3S), run the curl lines it printed, and stop it by PID."""
import imaplib
import os
import poplib
import random
import re
import shlex
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

SRC = os.environ["MK_SOURCE_DIR"]
BIN = os.environ["MK_BINARY"]
BOUND = 60


def free_base():
    """A base port whose +110, +143, +993 and +995 are all free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 50000)
        socks = []
        try:
            for off in (110, 143, 993, 995):
                s = socket.socket()
                s.bind(("127.0.0.1", base + off))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


class Demo(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="mk-demo-")
        self.base = free_base()
        env = dict(os.environ, MK_DEMO_DIR=os.path.join(self.tmp.name, "demo"),
                   MK_DEMO_PORT_BASE=str(self.base), MK_DEMO_BINARY=BIN)
        self.proc = subprocess.Popen([os.path.join(SRC, "packaging", "demo.sh")], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.out = []
        self.started = threading.Event()

        def reader():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                self.out.append(line)
                if "event=started" in line:
                    self.started.set()
            self.started.set()

        self.thread = threading.Thread(target=reader, daemon=True)
        self.thread.start()
        self.assertTrue(self.started.wait(BOUND), "demo did not start")
        self.assertIsNone(self.proc.poll(), "".join(self.out))

    def tearDown(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(BOUND)
        self.thread.join(BOUND)
        self.tmp.cleanup()

    def ctx(self):
        c = ssl.create_default_context()
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        return c

    def test_four_listeners_and_curl(self):
        text = "".join(self.out)
        self.assertIn("account: demo / demopass (3 messages in INBOX)", text)
        b = self.base
        # IMAP + STARTTLS
        m = imaplib.IMAP4("127.0.0.1", b + 143, timeout=BOUND)
        m.starttls(self.ctx())
        m.login("demo", "demopass")
        self.assertEqual(m.select("INBOX"), ("OK", [b"3"]))
        typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(data[0][1], b"Subject: Invoice 2026-117\r\n\r\n")
        m.logout()
        # IMAPS
        m = imaplib.IMAP4_SSL("127.0.0.1", b + 993, ssl_context=self.ctx(), timeout=BOUND)
        m.login("demo", "demopass")
        m.select("INBOX", readonly=True)
        self.assertEqual(m.search(None, "ALL"), ("OK", [b"1 2 3"]))
        m.logout()
        # POP3 + STLS
        p = poplib.POP3("127.0.0.1", b + 110, timeout=BOUND)
        p.stls(self.ctx())
        p.user("demo")
        p.pass_("demopass")
        count, size = p.stat()
        self.assertEqual(count, 3)
        with open(os.path.join(SRC, "packaging", "demo", "1-welcome.eml"), "rb") as f:
            welcome = f.read()
        self.assertEqual(b"\r\n".join(p.retr(1)[1]) + b"\r\n", welcome)
        p.quit()
        # POP3S with a wrong password first: refused, then fine
        p = poplib.POP3_SSL("127.0.0.1", b + 995, context=self.ctx(), timeout=BOUND)
        p.user("demo")
        with self.assertRaises(poplib.error_proto):
            p.pass_("wrong")
        p.quit()
        # every curl line the demo printed works as printed
        curls = [l.strip() for l in text.splitlines() if l.strip().startswith("curl ")]
        self.assertEqual(len(curls), 4)
        for line in curls:
            with self.subTest(curl=line):
                r = subprocess.run(shlex.split(line) + ["-sS", "--max-time", str(BOUND)],
                                   capture_output=True, timeout=BOUND * 2)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stdout)
        self.assertTrue(any(re.search(r"Subject: Welcome to mailkeep", subprocess.run(
            shlex.split(l) + ["-sS"], capture_output=True, text=True).stdout)
            for l in curls if "imap://" in l))


if __name__ == "__main__":
    unittest.main(verbosity=2)
