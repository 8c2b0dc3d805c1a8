"""fetchmail against mailkeep (issue 8 client matrix): POP3 keep, POP3 delete, IMAP keep,
IMAP delete, on one mailbox, each run's result checked byte for byte and against what the
other protocol then sees (RETR sets \\Seen for IMAP; a POP3 delete is an IMAP expunge)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consistency_lib import CLIENT_MSGS, ClientServer, crlf, lf, message_id  # noqa: E402

SEP = b"From fetchmail-test Thu Jan  1 00:00:00 2026\n"


class Fetchmail(unittest.TestCase):
    def setUp(self):
        self.cs = ClientServer()
        self.mbox = os.path.join(self.cs.home, "fetched.mbox")

    def tearDown(self):
        self.cs.cleanup()

    def fetchmail(self, proto, keep):
        home = self.cs.home
        script = os.path.join(home, "mda.sh")
        with open(script, "w") as f:
            f.write(f'#!/bin/sh\n{{ printf "%s" "{SEP.decode().strip()}"; echo; cat; }}'
                    f' >> "{self.mbox}"\n')
        port = self.cs.srv.port_pop3 if proto == "pop3" else self.cs.srv.port_imap
        rc = os.path.join(home, ".fetchmailrc")
        with open(rc, "w") as f:
            f.write(f'set no bouncemail\npoll 127.0.0.1 service {port} protocol {proto} '
                    f'auth password{" uidl" if proto == "pop3" else ""}\n'
                    f'  user "alice" password "secret" is "alice" here\n'
                    f'  {"keep" if keep else "no keep"} sslproto "" no mimedecode '
                    f'mda "/bin/sh {script}"\n')
        os.chmod(rc, 0o600)
        r = self.cs.run(["fetchmail", "-f", rc, "--nosyslog", "-N", "-i",
                         os.path.join(home, ".fetchids"), "--pidfile",
                         os.path.join(home, "fm.pid")], ok=(0, 1))
        return r.returncode  # 0: mail fetched, 1: no mail

    def fetched(self):
        """{X-MK-Id: the message as fetchmail delivered it} (its Received line removed)."""
        if not os.path.exists(self.mbox):
            return {}
        with open(self.mbox, "rb") as f:
            data = f.read()
        out = {}
        for chunk in data.split(SEP)[1:]:
            cid = message_id(chunk)
            self.assertNotIn(cid, out, "fetched twice")
            out[cid] = chunk
        return out

    def assert_exact(self, got, ids):
        self.assertEqual(sorted(got), sorted(ids))
        for i, m in enumerate(CLIENT_MSGS):
            cid = f"k{i + 1}"
            if cid not in ids:
                continue
            # fetchmail puts its own Received: header first; the rest is the message, as
            # served (CRLF) and written with LF line ends, exactly.
            body = got[cid]
            want = lf(crlf(m))
            self.assertTrue(body.endswith(want), f"{cid}: {body[-300:]!r} vs {want[-300:]!r}")
            extra = body[:len(body) - len(want)]
            self.assertTrue(extra == b"" or extra.startswith(b"Received: "), extra)

    def test_pop3_and_imap_keep_then_delete(self):
        pop_box = os.path.join(self.cs.home, "pop3.mbox")
        imap_box = os.path.join(self.cs.home, "imap.mbox")
        # POP3 keep + uidl: all three, exact; fetchmail uses TOP then, which never sets \Seen.
        self.mbox = pop_box
        self.assertEqual(self.fetchmail("pop3", True), 0)
        self.assert_exact(self.fetched(), ["k1", "k2", "k3"])
        srv = self.cs.server_messages()
        self.assertEqual(sorted(srv), ["k1", "k2", "k3"])
        self.assertTrue(all(f == frozenset() for _, f, _ in srv.values()), srv)
        self.assertEqual(self.fetchmail("pop3", True), 1)  # nothing new
        self.assertEqual(len(self.fetched()), 3)
        # IMAP keep: the three unseen ones, exact; now \Seen on the server; then nothing new.
        self.mbox = imap_box
        self.assertEqual(self.fetchmail("imap", True), 0)
        self.assert_exact(self.fetched(), ["k1", "k2", "k3"])
        self.assertTrue(all("\\Seen" in f for _, f, _ in self.cs.server_messages().values()))
        self.assertEqual(self.fetchmail("imap", True), 1)
        # A fourth message: POP3 keep fetches only it (a new UIDL).
        new = b"From: four@example.org\r\nSubject: fourth\r\nX-MK-Id: k4\r\n\r\nfour\r\n"
        self.cs.deliver(new, 4)
        self.mbox = pop_box
        self.assertEqual(self.fetchmail("pop3", True), 0)
        got = self.fetched()
        self.assertEqual(sorted(got), ["k1", "k2", "k3", "k4"])
        self.assertTrue(got["k4"].endswith(lf(new)))
        # IMAP no keep: fetches the unseen fourth and deletes it on the server.
        self.mbox = imap_box
        self.assertEqual(self.fetchmail("imap", False), 0)
        got = self.fetched()
        self.assertEqual(sorted(got), ["k1", "k2", "k3", "k4"])
        self.assertTrue(got["k4"].endswith(lf(new)))
        self.assertEqual(sorted(self.cs.server_messages()), ["k1", "k2", "k3"])
        # POP3 no keep: a fifth message is fetched and deleted at QUIT (an IMAP expunge).
        new5 = b"From: five@example.org\r\nSubject: fifth\r\nX-MK-Id: k5\r\n\r\nfive\r\n"
        self.cs.deliver(new5, 5)
        self.mbox = pop_box
        self.assertEqual(self.fetchmail("pop3", False), 0)
        got = self.fetched()
        self.assertEqual(sorted(got), ["k1", "k2", "k3", "k4", "k5"])
        self.assertTrue(got["k5"].endswith(lf(new5)))
        self.assertEqual(sorted(self.cs.server_messages()), ["k1", "k2", "k3"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
