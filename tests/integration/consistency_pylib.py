"""Python's imaplib and poplib on one mailbox (issue 8 client matrix): what imaplib APPENDs,
poplib RETRs byte for byte; UIDLs stay while IMAP changes flags (new/ -> cur/); an IMAP
expunge during a POP3 session answers -ERR and QUIT still succeeds; a POP3 delete reaches an
IMAP session as EXPUNGE; under pop3_delete = hide the message stays for IMAP with
$POP3Deleted and never shows in POP3 again."""
import imaplib
import os
import poplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consistency_lib import (CLIENT_MSGS, PASSWORD, USER, ClientServer, crlf, known_defect,  # noqa: E402
                             pop3_form)

APPENDED = (b"From: py@example.org\r\nTo: alice@example.org\r\nSubject: imaplib\r\n"
            b"X-MK-Id: k8\r\n\r\n.leading dot\r\nno final newline")


def retr(p, n):
    return b"\r\n".join(p.retr(n)[1]) + b"\r\n"


class PyLib(unittest.TestCase):
    def start(self, policy):
        self.cs = ClientServer(extra_server=f"pop3_delete = {policy}")
        self.addCleanup(self.cs.cleanup)
        m = imaplib.IMAP4("127.0.0.1", self.cs.srv.port_imap)
        m.login(USER, PASSWORD)
        self.addCleanup(m.shutdown)
        return m

    def pop(self):
        p = poplib.POP3("127.0.0.1", self.cs.srv.port_pop3, timeout=30)
        p.user(USER)
        p.pass_(PASSWORD)
        return p

    def test_expunge_policy(self):
        m = self.start("expunge")
        typ, data = m.append("INBOX", "(\\Flagged)", None, APPENDED)
        self.assertEqual(typ, "OK")
        m.select("INBOX")
        p = self.pop()
        uidl = p.uidl()[1]
        self.assertEqual(len(uidl), 4)
        want = [crlf(x) for x in CLIENT_MSGS] + [APPENDED]
        for n, w in enumerate(want, 1):
            self.assertEqual(retr(p, n), pop3_form(w), f"RETR {n}")
        p.quit()
        # IMAP flag changes move new/ files into cur/: the UIDLs stay.
        m.store("1:4", "+FLAGS", "\\Answered")
        m.store("1:4", "-FLAGS", "\\Answered")
        p = self.pop()
        self.assertEqual(p.uidl()[1], uidl)
        # IMAP expunges message 2 during the POP3 session: RETR 2 is -ERR, QUIT succeeds.
        m.store("2", "+FLAGS", "\\Deleted")
        m.expunge()
        with self.assertRaises(poplib.error_proto) as e:
            p.retr(2)
        self.assertIn(b"removed", e.exception.args[0])
        self.assertEqual(retr(p, 3), pop3_form(want[2]))
        p.dele(4)
        self.assertTrue(p.quit().startswith(b"+OK"))
        # The POP3 delete reaches the IMAP session as EXPUNGE (it is number 3 now).
        typ, data = m.noop()
        self.assertIn(b"3", m.response("EXPUNGE")[1] or [b""])
        typ, data = m.uid("SEARCH", None, "ALL")
        self.assertEqual(data, [b"1 3"])
        p = self.pop()
        self.assertEqual(p.uidl()[1], [b"1 " + uidl[0].split()[1], b"2 " + uidl[2].split()[1]])
        p.quit()

    def test_hide_policy(self):
        m = self.start("hide")
        m.select("INBOX")
        p = self.pop()
        uidl = p.uidl()[1]
        p.dele(1)
        p.dele(3)
        p.quit()
        m.noop()
        m.response("FETCH")  # the flag changes announced by NOOP
        typ, data = m.fetch("1:3", "(UID FLAGS)")
        self.assertEqual(data, [b"1 (UID 1 FLAGS (\\Recent $POP3Deleted))",
                                b"2 (UID 2 FLAGS (\\Recent))",
                                b"3 (UID 3 FLAGS (\\Recent $POP3Deleted))"])
        # Gone from POP3 for good; IMAP still reads them, byte for byte.
        p = self.pop()
        self.assertEqual(p.uidl()[1], [b"1 " + uidl[1].split()[1]])
        self.assertEqual(retr(p, 1), crlf(CLIENT_MSGS[1]))
        p.quit()
        typ, data = m.fetch("3", "(BODY.PEEK[])")
        self.assertEqual(data[0][1], crlf(CLIENT_MSGS[2]))

    def test_uid_store_of_a_new_arrival(self):
        """D4, fixed: a UID command resolves UIDs after taking in the session's new arrivals."""
        # Another session APPENDs; this one learns the UID (from its other connection, as a
        # client with two connections does) and stores a flag on it by UID.
        m = self.start("expunge")
        m.select("INBOX")
        n = imaplib.IMAP4("127.0.0.1", self.cs.srv.port_imap)
        n.login(USER, PASSWORD)
        typ, data = n.append("INBOX", None, None, APPENDED)
        uid = data[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]")
        n.logout()
        typ, data = m.uid("STORE", uid.decode(), "+FLAGS", "(\\Flagged)")
        self.assertEqual(typ, "OK")
        typ, data = m.uid("FETCH", uid.decode(), "(FLAGS)")
        self.assertIn(b"\\Flagged", data[0], data)


if __name__ == "__main__":
    unittest.main(verbosity=2)
