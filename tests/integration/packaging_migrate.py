"""mailkeep(8), MIGRATING A MAILDIR and MTA INTEGRATION, done as written: a Maildir left by a
server whose POP3 UIDL was the file's base name (qmail-pop3d, Courier, Dovecot with
pop3_uidl_format = %f) is copied in with `cp -a`, and every message keeps that UIDL over POP3,
across a restart too, so no POP3 client downloads anything twice; the other server's index files
are ignored. Then a message delivered the way Postfix's virtual(8) writes a Maildir (tmp/, link
into new/, unlink) reaches the next POP3 session. The real binary with pam_matrix
(pop3_harness), no root."""
import os
import subprocess
import unittest

from pop3_harness import Raw, Server, crlf, unstuff

# base name -> (sub-folder, info suffix, body)
OLD = {
    "1699990001.M100P4242Q1.oldhost": ("cur", ":2,S", b"Subject: one\n\nfirst, read\n"),
    "1699990002.M200P4243.oldhost": ("cur", ":2,", b"Subject: two\n\nsecond\n"),
    "1699990003.M300P4244.oldhost,S=57": ("new", "", b"Subject: three\n\nthird, unread\n"),
    # Longer than a UIDL may be (70): mailkeep serves a stable hash of it instead.
    "1699990004.M400P4245." + "x" * 64: ("cur", ":2,RS", b"Subject: four\n\nfourth\n"),
}


class Migrate(unittest.TestCase):
    def setUp(self):
        self.srv = Server()
        self.old = os.path.join(self.srv.dir, "old-Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.old, sub))
        for base, (sub, info, body) in OLD.items():
            with open(os.path.join(self.old, sub, base + info), "wb") as f:
                f.write(body)
        # What the old servers kept beside the mail: mailkeep must not trip over it.
        for name, data in (("dovecot-uidlist", b"3 V1699990000 N5 G0\n1 :1699990001.M100\n"),
                           ("dovecot.index.log", b"\x01\x02"), ("courierimapuiddb", b"1 5\n")):
            with open(os.path.join(self.old, name), "wb") as f:
                f.write(data)
        os.makedirs(os.path.join(self.old, "courierimapkeywords"))

    def tearDown(self):
        self.srv.cleanup()

    def uidls(self):
        """{UIDL: message bytes} of alice's POP3 view."""
        c = Raw(self.srv.port_plain)
        c.login("alice")
        self.assertTrue(c.cmd("UIDL").startswith(b"+OK"))
        listing = unstuff(c.multiline()).split(b"\r\n")
        out = {}
        for entry in listing:
            if not entry:
                continue
            n, uidl = entry.split(b" ")
            self.assertTrue(c.cmd("RETR " + n.decode()).startswith(b"+OK"))
            out[uidl.decode()] = unstuff(c.multiline())
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
        c.close()
        return out

    def test_copied_maildir_keeps_its_uidls(self):
        store = self.srv.maildir("alice")
        # The documented steps: copy with names unchanged (cp -a), owned by the mail user.
        os.makedirs(store)
        r = subprocess.run(["cp", "-a", self.old + "/.", store + "/"], capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        if self.srv.owner:
            subprocess.run(["chown", "-R", "%d:%d" % self.srv.owner, store], check=True)
        os.chmod(store, 0o700)

        self.srv.start()
        first = self.uidls()
        long_base = [b for b in OLD if len(b) > 70][0]
        expected = {b: crlf(OLD[b][2]) for b in OLD if b != long_base}
        hashed = {u: m for u, m in first.items() if u not in expected}
        self.assertEqual({u: m for u, m in first.items() if u in expected}, expected)
        self.assertEqual(list(hashed.values()), [crlf(OLD[long_base][2])])
        hashed_uidl = list(hashed)[0]
        self.assertLessEqual(len(hashed_uidl), 70)

        # A restart reads mailkeep's own UID list: the same UIDLs.
        self.srv.stop()
        self.srv.started.clear()
        self.srv.start()
        self.assertEqual(self.uidls(), first)

        # Postfix's virtual(8) delivers: write tmp/, link into new/, unlink tmp/.
        name = "1700000000.V801I12345M678901.mx"
        tmp = os.path.join(store, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(b"Subject: from postfix\n\ndelivered\n")
            f.flush()
            os.fsync(f.fileno())
        if self.srv.owner:
            os.chown(tmp, *self.srv.owner)
        os.link(tmp, os.path.join(store, "new", name))
        os.unlink(tmp)
        after = self.uidls()
        self.assertEqual(after[name], b"Subject: from postfix\r\n\r\ndelivered\r\n")
        self.assertEqual({u: m for u, m in after.items() if u != name}, first)


if __name__ == "__main__":
    unittest.main(verbosity=2)
