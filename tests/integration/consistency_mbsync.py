"""mbsync (isync) two-way against mailkeep, with POP3 working on the same mailbox (issue 8
client matrix): sync, then a change on each side (and a POP3 delete), sync again; the local
Maildir and the server agree message for message, byte for byte, flag for flag."""
import os
import poplib
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consistency_lib import (CLIENT_MSGS, INFO_FLAGS, PASSWORD, USER, ClientServer, crlf, lf,  # noqa: E402
                             message_id)


def strip_tuid(data):
    """mbsync writes its own tracking header (X-TUID) into the header of the copies it makes,
    on either side; everything else is the message."""
    return re.sub(rb"^((?:(?!\r?\n\r?\n).)*?\n)X-TUID: [^\n]*\n", rb"\1", data, count=1,
                  flags=re.S)


class Mbsync(unittest.TestCase):
    def setUp(self):
        self.cs = ClientServer()
        self.local = os.path.join(self.cs.home, "local")
        os.mkdir(self.local)
        self.conf = os.path.join(self.cs.home, "mbsyncrc")
        with open(self.conf, "w") as f:
            f.write(f"""IMAPAccount t
Host 127.0.0.1
Port {self.cs.srv.port_imap}
User {USER}
Pass {PASSWORD}
SSLType None
AuthMechs LOGIN

IMAPStore far
Account t

MaildirStore near
Path {self.local}/
Inbox {self.local}/INBOX
SubFolders Verbatim

Channel c
Far :far:
Near :near:
Patterns INBOX
Create Both
Expunge Both
SyncState *
""")

    def tearDown(self):
        self.cs.cleanup()

    def sync(self):
        self.cs.run(["mbsync", "-c", self.conf, "-a"])

    def near(self):
        """{X-MK-Id: (path, system flags, bytes)} of the local INBOX."""
        out = {}
        for sub in ("new", "cur"):
            d = os.path.join(self.local, "INBOX", sub)
            for n in os.listdir(d):
                with open(os.path.join(d, n), "rb") as f:
                    data = f.read()
                info = n.split(":2,", 1)[1] if ":2," in n else ""
                fl = frozenset(INFO_FLAGS[c] for c in info if c in INFO_FLAGS)
                data = strip_tuid(data)
                cid = message_id(data)
                self.assertNotIn(cid, out, "two local copies")
                out[cid] = (os.path.join(d, n), fl, data)
        return out

    def assert_same(self):
        """Both sides: the same messages, the same flags, the same bytes (the local copy is
        the server's CRLF message with LF line ends, as mbsync stores it)."""
        far = self.cs.server_messages()
        near = self.near()
        self.assertEqual(sorted(far), sorted(near))
        for cid, (_, fl, data) in near.items():
            self.assertEqual(fl, far[cid][1] - {"$POP3Deleted"}, cid)
            self.assertEqual(data, lf(strip_tuid(far[cid][2])), cid)
        return far, near

    def test_two_way_with_pop3(self):
        self.sync()
        far, near = self.assert_same()
        self.assertEqual(sorted(near), ["k1", "k2", "k3"])
        for i, m in enumerate(CLIENT_MSGS):
            self.assertEqual(near[f"k{i + 1}"][2], lf(crlf(m)))
        self.sync()  # a second run changes nothing
        self.assertEqual(self.near(), near)
        # Server side: POP3 downloads k1 (\Seen) and deletes k2; IMAP flags k3.
        p = poplib.POP3("127.0.0.1", self.cs.srv.port_pop3, timeout=30)
        p.user(USER)
        p.pass_(PASSWORD)
        self.assertEqual(b"\r\n".join(p.retr(1)[1]) + b"\r\n", crlf(CLIENT_MSGS[0]))
        p.dele(2)
        p.quit()
        import imaplib
        m = imaplib.IMAP4("127.0.0.1", self.cs.srv.port_imap)
        m.login(USER, PASSWORD)
        m.select("INBOX")
        m.store("2", "+FLAGS", "\\Flagged")  # k3 is now number 2
        # Local side: a new message, and k3 marked answered.
        new = (b"From: near@example.org\nTo: alice@example.org\nSubject: written locally\n"
               b"X-MK-Id: k7\n\nfrom the near side\n.dot\n")
        tmp = os.path.join(self.local, "INBOX", "tmp", "1700001000.local.host")
        with open(tmp, "wb") as f:
            f.write(new)
        os.rename(tmp, os.path.join(self.local, "INBOX", "new", "1700001000.local.host"))
        path = self.near()["k3"][0]
        base, info = path.split(":2,")
        os.rename(path, base + ":2," + "".join(sorted(info + "R")))
        self.sync()
        far, near = self.assert_same()
        self.assertEqual(sorted(near), ["k1", "k3", "k7"])
        self.assertEqual(far["k1"][1], frozenset({"\\Seen"}))
        self.assertEqual(far["k3"][1], frozenset({"\\Flagged", "\\Answered"}))
        # The locally written message reached the server intact: IMAP and POP3 agree.
        self.assertEqual(lf(strip_tuid(far["k7"][2])), new)
        p = poplib.POP3("127.0.0.1", self.cs.srv.port_pop3, timeout=30)
        p.user(USER)
        p.pass_(PASSWORD)
        self.assertEqual(p.stat()[0], 3)
        self.assertEqual(b"\r\n".join(p.retr(3)[1]) + b"\r\n", far["k7"][2])
        p.quit()
        m.noop()
        m.logout()
        # That RETR set \\Seen: the next sync brings it to the local copy, the one after
        # changes nothing.
        self.sync()
        far, near = self.assert_same()
        self.assertEqual(near["k7"][1], frozenset({"\\Seen"}))
        self.sync()
        self.assertEqual(self.near(), near)


if __name__ == "__main__":
    unittest.main(verbosity=2)
