"""mutt and mailkeep on the same mbox (issue 11): flags set by one are seen by the other.

mailkeep serves alice's INBOX (mail_format = mbox, the file mail/alice/inbox); real mutt
(Debian's package, in a pseudo-terminal: it needs one even when driven by `push`) opens the
same file with its own locking (fcntl + dotlock through mutt_dotlock), copies the messages it
sees as flagged / read / replied into three files (what mutt read from Status:/X-Status:),
sets flags itself (set-flag ! and r) and syncs the mailbox. Then IMAP must see mutt's flags
with the UIDs unchanged, and another round goes the other way. No sleeps: mutt runs to its
exit (pty EOF) within a deadline, the server is waited on by its log.
"""
import imaplib
import os
import pty
import re
import select
import shutil
import sys
import time
import unittest

os.environ["MK_MAIL_FORMAT"] = "mbox"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imap_harness as h  # noqa: E402
import mbox_tools  # noqa: E402

MUTTRC = """set mbox_type=mbox
set folder={home}
set confirmcreate=no
set confirmappend=no
set quit=yes
set move=no
set delete=yes
set wait_key=no
set sort=mailbox-order
set mark_old=no
set beep=no
set check_new=no
set header_cache=""
set record=""
"""


def msg(subject):
    return (f"From: {subject}@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.org>\r\n\r\nbody of {subject}\r\n").encode()


class MuttAndServer(unittest.TestCase):
    def setUp(self):
        self.srv = h.Server()
        self.srv.start()
        self.home = os.path.join(self.srv.dir, "mutt-home")
        os.mkdir(self.home, 0o700)
        with open(os.path.join(self.home, "muttrc"), "w") as f:
            f.write(MUTTRC.format(home=self.home))
        if self.srv.owner:
            for p in (self.home, os.path.join(self.home, "muttrc")):
                os.chown(p, *self.srv.owner)
        self.inbox = mbox_tools.mbox_path(self.srv.maildir("alice"))

    def tearDown(self):
        self.srv.stop()
        shutil.rmtree(self.srv.dir, ignore_errors=True)

    def mutt(self, keys):
        """Run mutt on the inbox with KEYS pushed, to its exit (bounded)."""
        cmd = ["mutt", "-n", "-F", os.path.join(self.home, "muttrc"), "-f", self.inbox,
               "-e", f'push "{keys}<quit>"']
        pid, fd = pty.fork()
        if pid == 0:
            try:
                if self.srv.owner:
                    os.setgroups([])
                    os.setgid(self.srv.owner[1])
                    os.setuid(self.srv.owner[0])
                os.environ.update(HOME=self.home, TERM="vt100", LC_ALL="C.UTF-8")
                os.environ.pop("LD_PRELOAD", None)
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
        out = b""
        deadline = time.monotonic() + 60
        while True:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"mutt did not finish: {out[-2000:]!r}")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            try:
                d = os.read(fd, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not d:
                break
            out += d
        os.close(fd)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(status, 0, out[-2000:])
        return out

    def copy_keys(self, pattern, name):
        path = os.path.join(self.home, name)
        return (f"<tag-pattern>{pattern}<enter><tag-prefix><copy-message>{path}<enter>"
                f"<untag-pattern>~A<enter>")

    def subjects(self, name):
        return sorted(hd.get("subject", "") for hd, _ in
                      mbox_tools.messages(os.path.join(self.home, name)))

    def flags(self, c):
        """{subject: (uid, set of system flags)} over IMAP."""
        typ, data = c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertEqual(typ, "OK")
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, hdr = item
            uid = int(re.search(rb"UID (\d+)", meta).group(1))
            fl = set(re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode().split())
            subj = re.search(rb"Subject: (\S+)", hdr).group(1).decode()
            out[subj] = (uid, {f for f in fl if f != "\\Recent"})
        return out

    def file_flags(self):
        return {hd["subject"]: mbox_tools.flags_of(hd)
                for hd, _ in mbox_tools.messages(self.inbox)}

    def test_flags_both_ways(self):
        c = imaplib.IMAP4("127.0.0.1", self.srv.port_plain)
        c.login("alice", "secret")
        for subject, fl in (("alpha", "()"), ("beta", "(\\Flagged)"),
                            ("gamma", "(\\Seen \\Answered)")):
            typ, _ = c.append("INBOX", fl, None, msg(subject))
            self.assertEqual(typ, "OK")
        self.srv.deliver(msg("delta"))  # the MTA
        typ, data = c.select("INBOX")
        self.assertEqual(data, [b"4"])
        uidvalidity = c.response("UIDVALIDITY")[1][0]
        before = self.flags(c)
        self.assertEqual({s: f for s, (_, f) in before.items()},
                         {"alpha": set(), "beta": {"\\Flagged"},
                          "gamma": {"\\Seen", "\\Answered"}, "delta": set()})
        c.store("2", "+FLAGS", "(\\Seen)")  # beta, set over IMAP after the append
        c.close()
        # the file follows the server's state soon after (storage/README.md "mbox")
        want = {"alpha": set(), "beta": {"\\Flagged", "\\Seen"},
                "gamma": {"\\Seen", "\\Answered"}, "delta": set()}
        self.assertTrue(mbox_tools.wait_until(self.inbox, lambda: self.file_flags() == want),
                        self.file_flags())

        # mutt reads what the server wrote ...
        keys = (self.copy_keys("~F", "flagged") + self.copy_keys("~R", "read") +
                self.copy_keys("~Q", "replied") +
                # ... and sets flags of its own: alpha flagged + replied, delta flagged
                "<tag-pattern>~s alpha<enter><tag-prefix><set-flag>!"
                "<tag-prefix><set-flag>r<untag-pattern>~A<enter>"
                "<tag-pattern>~s delta<enter><tag-prefix><set-flag>!<untag-pattern>~A<enter>"
                "<sync-mailbox>")
        self.mutt(keys)
        self.assertEqual(self.subjects("flagged"), ["beta"])
        self.assertEqual(self.subjects("read"), ["beta", "gamma"])
        self.assertEqual(self.subjects("replied"), ["gamma"])
        disk = self.file_flags()
        self.assertTrue({"\\Flagged", "\\Answered"} <= disk["alpha"], disk)
        self.assertEqual(disk["delta"] & {"\\Flagged"}, {"\\Flagged"}, disk)

        # the server sees mutt's flags, UIDs and UIDVALIDITY unchanged
        typ, data = c.select("INBOX")
        self.assertEqual(data, [b"4"])
        self.assertEqual(c.response("UIDVALIDITY")[1][0], uidvalidity)
        after = self.flags(c)
        self.assertEqual({s: u for s, (u, _) in after.items()},
                         {s: u for s, (u, _) in before.items()})
        self.assertEqual({s: f for s, (_, f) in after.items()}, disk)
        typ, data = c.fetch("1", "(BODY.PEEK[TEXT])")
        self.assertEqual(data[0][1], b"body of alpha\r\n")

        # the other way again: the server clears alpha's flag, flags gamma; mutt sees it
        c.store("1", "-FLAGS", "(\\Flagged)")
        c.store("3", "+FLAGS", "(\\Flagged)")
        c.logout()
        self.assertTrue(mbox_tools.wait_until(
            self.inbox, lambda: "\\Flagged" not in self.file_flags()["alpha"] and
            "\\Flagged" in self.file_flags()["gamma"]), self.file_flags())
        self.mutt(self.copy_keys("~F", "flagged2") + self.copy_keys("~U", "unread"))
        self.assertEqual(self.subjects("flagged2"), ["beta", "delta", "gamma"])
        self.assertEqual(self.subjects("unread"), ["delta"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
