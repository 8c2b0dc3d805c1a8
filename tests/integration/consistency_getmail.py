"""getmail6 against mailkeep (issue 8 client matrix): POP3 and IMAP retrievers with
`delete = false`, each run twice: the first run delivers every message into a local Maildir
byte for byte, the second delivers nothing, and the server keeps everything."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consistency_lib import CLIENT_MSGS, ClientServer, crlf, lf, message_id  # noqa: E402


class Getmail(unittest.TestCase):
    def setUp(self):
        self.cs = ClientServer()

    def tearDown(self):
        self.cs.cleanup()

    def getmail(self, kind, name):
        gmdir = os.path.join(self.cs.home, name)
        md = os.path.join(gmdir, "Maildir")
        for d in (gmdir, md, md + "/tmp", md + "/new", md + "/cur"):
            os.makedirs(d, exist_ok=True)
        port = self.cs.srv.port_pop3 if kind == "POP3" else self.cs.srv.port_imap
        rc = os.path.join(gmdir, "getmailrc")
        imap_opts = "mailboxes = ('INBOX',)\nrecord_mailbox = false" if kind == "IMAP" else ""
        with open(rc, "w") as f:
            f.write(f"""[retriever]
type = Simple{kind}Retriever
server = 127.0.0.1
port = {port}
username = alice
password = secret
{imap_opts}

[destination]
type = Maildir
path = {md}/

[options]
delete = false
read_all = false
delivered_to = false
received = false
verbose = 1
""")
        r = self.cs.run(["getmail", "--getmaildir", gmdir, "--rcfile", rc])
        return r.stdout.decode() + r.stderr.decode(), md

    def local(self, md):
        out = {}
        for sub in ("new", "cur"):
            for n in os.listdir(os.path.join(md, sub)):
                with open(os.path.join(md, sub, n), "rb") as f:
                    data = f.read()
                cid = message_id(data)
                self.assertNotIn(cid, out, "delivered twice")
                out[cid] = data
        return out

    def check_twice(self, kind):
        before = self.cs.server_messages()
        out, md = self.getmail(kind, kind.lower())
        self.assertIn("3 messages (", out)
        got = self.local(md)
        self.assertEqual(sorted(got), ["k1", "k2", "k3"])
        for i, m in enumerate(CLIENT_MSGS):
            # getmail writes what the server sent (CRLF) with LF line ends; with
            # delivered_to/received off it adds nothing but Return-Path.
            data = got[f"k{i + 1}"]
            want = lf(crlf(m))
            self.assertTrue(data.endswith(want), f"k{i + 1}: {data[:200]!r}")
            extra = data[:len(data) - len(want)]
            self.assertTrue(extra == b"" or extra.startswith(b"Return-Path: "), extra)
            self.assertEqual(extra.count(b"\n"), min(1, len(extra)), extra)
        out, _ = self.getmail(kind, kind.lower())
        self.assertIn("0 messages", out)
        self.assertEqual(self.local(md), got, "the second run delivered something")
        after = self.cs.server_messages()
        self.assertEqual(sorted(after), ["k1", "k2", "k3"])
        self.assertEqual({k: v[0] for k, v in after.items()}, {k: v[0] for k, v in before.items()})
        self.assertEqual({k: v[2] for k, v in after.items()}, {k: v[2] for k, v in before.items()})
        return after

    def test_pop3_twice(self):
        after = self.check_twice("POP3")
        # RETR marked them \Seen (pop3_retr_sets_seen = yes).
        self.assertTrue(all("\\Seen" in v[1] for v in after.values()), after)

    def test_imap_twice(self):
        self.check_twice("IMAP")


if __name__ == "__main__":
    unittest.main(verbosity=2)
