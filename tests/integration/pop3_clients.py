"""POP3 against the real daemon with real clients: Python poplib (plain, STLS, POP3S), curl
(pop3:// and pop3s:// LIST, RETR, DELE), fetchmail (keep and no-keep, into an mbox through
an MDA) and getmail6 (delete = false, run twice: the second run downloads nothing)."""
import os
import poplib
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pop3_harness as h  # noqa: E402

MSGS = [
    b"From: one@example.com\r\nSubject: first\r\n\r\nHello.\r\n.dot line\r\n",
    b"From: two@example.com\nSubject: second\n\nbare LF body\n..two dots\n",
    b"From: three@example.com\r\nSubject: third\r\n\r\nno final newline",
]


def wire_form(m):
    c = h.crlf(m)
    return c if c.endswith(b"\r\n") else c + b"\r\n"


class Pop3Clients(unittest.TestCase):
    def setUp(self):
        self.srv = h.Server()
        for m in MSGS:
            self.srv.deliver(m)
        self.srv.start()
        self.ctx = h.tls_context(self.srv.cert)

    def tearDown(self):
        rc = self.srv.stop()
        self.srv.cleanup()
        self.assertEqual(rc, 0)

    def check_session(self, p):
        count, size = p.stat()
        self.assertEqual(count, 3)
        self.assertEqual(size, sum(len(h.crlf(m)) for m in MSGS))
        resp, lines, _ = p.list()
        self.assertTrue(resp.startswith(b"+OK"))
        sizes = sorted(int(x.split()[1]) for x in lines)
        self.assertEqual(sizes, sorted(len(h.crlf(m)) for m in MSGS))
        got = []
        for i in range(1, 4):
            resp, lines, octets = p.retr(i)
            got.append(b"\r\n".join(lines) + b"\r\n")
        self.assertEqual(sorted(got), sorted(wire_form(m) for m in MSGS))
        resp, lines, _ = p.uidl()
        ids = [x.split()[1] for x in lines]
        self.assertEqual(len(set(ids)), 3)
        for uid in ids:
            self.assertTrue(1 <= len(uid) <= 70 and all(0x21 <= b <= 0x7E for b in uid))
        resp, lines, _ = p.top(1, 0)
        self.assertIn(b"", lines)  # the blank separator line
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_poplib_plain(self):
        p = poplib.POP3("127.0.0.1", self.srv.port_plain, timeout=30)
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        caps = p.capa()
        for c in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE",
                  "EXPIRE", "IMPLEMENTATION"):
            self.assertIn(c, caps)
        self.assertEqual(caps["SASL"], ["PLAIN", "LOGIN"])
        self.assertNotIn("STLS", caps)
        p.user("alice")
        p.pass_("secret")
        self.check_session(p)

    def test_poplib_stls(self):
        p = poplib.POP3("127.0.0.1", self.srv.port, timeout=30)
        self.assertIn("STLS", p.capa())
        p.stls(context=self.ctx)
        self.assertNotIn("STLS", p.capa())
        p.user("alice")
        p.pass_("secret")
        self.check_session(p)

    def test_poplib_pop3s_and_bad_password(self):
        p = poplib.POP3_SSL("127.0.0.1", self.srv.port_tls, context=self.ctx, timeout=30)
        self.assertNotIn("STLS", p.capa())
        p.user("alice")
        with self.assertRaises(poplib.error_proto) as e:
            p.pass_("wrong")
        self.assertEqual(e.exception.args[0], b"-ERR [AUTH] Authentication failed.")
        p.user("alice")
        p.pass_("secret")
        self.check_session(p)

    def test_sasl_plain_initial_response(self):
        p = poplib.POP3_SSL("127.0.0.1", self.srv.port_tls, context=self.ctx, timeout=30)
        # RFC 5034 AUTH with an initial response: base64("\0bob\0hunter 2").
        r = p._shortcmd("AUTH PLAIN AGJvYgBodW50ZXIgMg==")
        self.assertTrue(r.startswith(b"+OK Logged in"))
        self.assertEqual(p.stat(), (0, 0))
        p.quit()

    def curl(self, *args):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "-u", "alice:secret"] +
                           list(args), capture_output=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return r.stdout

    def test_curl(self):
        base = f"pop3://127.0.0.1:{self.srv.port_plain}/"
        listing = self.curl(base)
        sizes = sorted(int(x.split()[1]) for x in listing.splitlines())
        self.assertEqual(sizes, sorted(len(h.crlf(m)) for m in MSGS))
        got = sorted(self.curl(base + str(i)) for i in (1, 2, 3))
        self.assertEqual(got, sorted(wire_form(m) for m in MSGS))
        # pop3s:// with the certificate checked.
        tls = f"pop3s://127.0.0.1:{self.srv.port_tls}/"
        self.assertEqual(self.curl("--cacert", self.srv.cert, tls), listing)
        self.assertEqual(self.curl("--cacert", self.srv.cert, tls + "2"),
                         self.curl(base + "2"))
        # DELE through curl (then QUIT): one message fewer in the store.
        self.curl(base + "1", "-X", "DELE", "-I")
        self.assertEqual(len(self.srv.message_files(expect=2)), 2)
        self.assertEqual(len(self.curl(tls, "--cacert", self.srv.cert).splitlines()), 2)

    def fetchmail(self, keep, mbox):
        home = os.path.join(self.srv.dir, "fm-home")
        os.makedirs(home, exist_ok=True)
        rc = os.path.join(home, ".fetchmailrc")
        script = os.path.join(home, "mda.sh")
        with open(script, "w") as f:
            f.write(f'#!/bin/sh\n{{ echo "From fetchmail  Thu Jan  1 00:00:00 2026"; cat; echo; }}'
                    f' >> "{mbox}"\n')
        mda = f"/bin/sh {script}"
        with open(rc, "w") as f:
            f.write(f'set no bouncemail\npoll 127.0.0.1 service {self.srv.port_plain} '
                    f'protocol pop3 auth password uidl\n'
                    f'  user "alice" password "secret" is "alice" here\n'
                    f'  {"keep" if keep else "no keep"} sslproto "" mda "{mda}"\n')
        os.chmod(rc, 0o600)
        env = dict(os.environ, HOME=home)
        env.pop("LD_PRELOAD", None)
        r = subprocess.run(["fetchmail", "-f", rc, "--nosyslog", "-N", "-i",
                            os.path.join(home, ".fetchids"), "--pidfile",
                            os.path.join(home, "fm.pid")],
                           capture_output=True, env=env, timeout=120)
        # 0: mail fetched; 1: no mail.
        self.assertIn(r.returncode, (0, 1), r.stdout.decode() + r.stderr.decode())
        return r.returncode

    def mbox_count(self, mbox):
        if not os.path.exists(mbox):
            return 0
        with open(mbox, "rb") as f:
            return sum(1 for line in f if line.startswith(b"From fetchmail "))

    def test_fetchmail_keep_then_no_keep(self):
        mbox = os.path.join(self.srv.dir, "fetchmail.mbox")
        self.assertEqual(self.fetchmail(True, mbox), 0)
        self.assertEqual(self.mbox_count(mbox), 3)
        self.assertEqual(len(self.srv.message_files(expect=3)), 3)  # keep: still on the server
        with open(mbox, "rb") as f:
            data = f.read()
        for subject in (b"first", b"second", b"third"):
            self.assertEqual(data.count(b"Subject: " + subject), 1)
        # keep + uidl: a second run fetches nothing new.
        self.assertEqual(self.fetchmail(True, mbox), 1)
        self.assertEqual(self.mbox_count(mbox), 3)
        # no keep: fetchmail deletes what it has (fetchall is not set, so nothing new is
        # downloaded, but "flush" is not set either): deliver one more and fetch it.
        self.srv.deliver(b"From: four@example.com\r\nSubject: fourth\r\n\r\nfour\r\n")
        self.assertEqual(self.fetchmail(False, mbox), 0)
        self.assertEqual(self.mbox_count(mbox), 4)
        self.assertEqual(len(self.srv.message_files(expect=3)), 3)  # the fetched one is gone

    def getmail(self, gmdir, mbox):
        rc = os.path.join(gmdir, "getmailrc")
        with open(rc, "w") as f:
            f.write(f"""[retriever]
type = SimplePOP3Retriever
server = 127.0.0.1
port = {self.srv.port_plain}
username = alice
password = secret

[destination]
type = Mboxrd
path = {mbox}

[options]
delete = false
read_all = false
verbose = 1
""")
        env = dict(os.environ, HOME=gmdir)
        env.pop("LD_PRELOAD", None)
        # getmail refuses to deliver as root: run it as the store's owner then.
        demote = None
        if self.srv.owner:
            for root, dirs, files in os.walk(gmdir):
                for n in dirs + files + ["."]:
                    os.chown(os.path.join(root, n), *self.srv.owner)
            uid, gid = self.srv.owner

            def demote():
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
        r = subprocess.run(["getmail", "--getmaildir", gmdir, "--rcfile", rc],
                           capture_output=True, env=env, timeout=120, preexec_fn=demote)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        return r.stdout.decode() + r.stderr.decode()

    def test_getmail_twice(self):
        gmdir = os.path.join(self.srv.dir, "getmail")
        os.makedirs(gmdir)
        mbox = os.path.join(gmdir, "inbox.mbox")
        open(mbox, "wb").close()
        out = self.getmail(gmdir, mbox)
        self.assertIn("3 messages (", out)
        with open(mbox, "rb") as f:
            first = f.read()
        self.assertEqual(first.count(b"\nFrom ") + first.startswith(b"From "), 3)
        out = self.getmail(gmdir, mbox)
        self.assertIn("0 messages", out)
        with open(mbox, "rb") as f:
            self.assertEqual(f.read(), first)  # the second run downloaded nothing
        self.assertEqual(len(self.srv.message_files(expect=3)), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
