"""POP3 wire behaviour against the real daemon, byte for byte: RETR of messages with '.'
lines, bare LF on disk, a 10,000-character line and no final newline; a 50 MB message
streamed while the server's RSS is measured; drop-without-QUIT commits nothing; DELE + QUIT
under pop3_delete = expunge and hide, checked in the Maildir; one POP3 session per mailbox;
500 commands pipelined in one write answered in order; limits (line length, bad commands);
pop3_expire_days under both policies (the retrieval record aged by rewriting it)."""
import hashlib
import imaplib
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pop3_harness as h  # noqa: E402

EDGE = [
    b"From: a@example.com\r\nSubject: dots\r\n\r\n.\r\n..\r\n.x\r\nmid . dot\r\n.\r\n",
    b"From: b@example.com\nSubject: bare LF\n\nline one\n.line two\n\nend\n",
    b"From: c@example.com\r\nSubject: long\r\n\r\n" + b"L" * 10000 + b"\r\n.short\r\n",
    b"From: d@example.com\nSubject: no newline\n\n.last line without newline",
    b"From: e@example.com\r\nSubject: mixed\r\n\r\nCRLF line\r\nLF line\nCR\rinside\r\n",
]


def expected_wire(m):
    """RETR body bytes as they must appear on the wire (dot-stuffed, CRLF, terminator)."""
    c = h.crlf(m)
    if not c.endswith(b"\r\n"):
        c += b"\r\n"
    lines = c[:-2].split(b"\r\n")
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + \
        b".\r\n"


class Base(unittest.TestCase):
    extra = ""

    def setUp(self):
        self.srv = h.Server(extra_server=self.extra)

    def tearDown(self):
        rc = self.srv.stop()
        log = self.srv.log_text()
        self.srv.cleanup()
        self.assertEqual(rc, 0, log[-4000:])

    def retr_all(self, c):
        """Map of wire body -> (number, LIST size) for every message."""
        st = c.cmd("STAT")
        n = int(st.split()[1])
        out = {}
        for i in range(1, n + 1):
            size = int(c.cmd(f"LIST {i}").split()[2])
            r = c.cmd(f"RETR {i}")
            self.assertEqual(r, b"+OK %d octets\r\n" % size)
            out[c.multiline()] = (i, size)
        return out


class Pop3Wire(Base):
    def test_byte_exact_retr_and_top(self):
        for m in EDGE:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        self.assertEqual(c.greeting, b"+OK mailkeep POP3 ready.\r\n")
        c.login()
        got = self.retr_all(c)
        self.assertEqual(sorted(got), sorted(expected_wire(m) for m in EDGE))
        for m in EDGE:
            self.assertEqual(got[expected_wire(m)][1], len(h.crlf(m)))  # exact CRLF size
        # TOP n 0: the header and the blank line only; TOP n 1: one body line more.
        num = got[expected_wire(EDGE[0])][0]
        self.assertEqual(c.cmd(f"TOP {num} 0"), b"+OK Top of message %d follows.\r\n" % num)
        self.assertEqual(c.multiline(),
                         b"From: a@example.com\r\nSubject: dots\r\n\r\n.\r\n")
        c.cmd(f"TOP {num} 2")
        self.assertEqual(c.multiline(),
                         b"From: a@example.com\r\nSubject: dots\r\n\r\n..\r\n...\r\n.\r\n")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        self.assertTrue(c.eof())

    def test_50mb_streamed(self):
        line = b"0123456789" * 9 + b"abcdefgh\n"  # 99 bytes, bare LF on disk
        body = bytearray(b"From: big@example.com\nSubject: big\n\n")
        while len(body) < 50 * 1024 * 1024:
            body += line
            body += b".dot-stuffed line\n"
        self.srv.deliver(bytes(body))
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.login()
        base = self.srv.rss_kb()
        size = len(h.crlf(bytes(body)))
        self.assertEqual(c.cmd("RETR 1"), b"+OK %d octets\r\n" % size)
        digest = hashlib.sha256()
        received = len(c.buf)
        digest.update(c.buf)
        tail = c.buf[-5:]
        c.buf = b""
        peak = base
        next_sample = 0
        while not tail.endswith(b"\r\n.\r\n"):
            chunk = c.s.recv(1 << 16)
            self.assertTrue(chunk, "connection closed during RETR")
            digest.update(chunk)
            received += len(chunk)
            tail = (tail + chunk)[-5:]
            if received >= next_sample:
                peak = max(peak, self.srv.rss_kb())
                next_sample += 1 << 20
        self.assertEqual(digest.hexdigest(), hashlib.sha256(expected_wire(bytes(body))).hexdigest())
        growth_mb = (peak - base) / 1024
        print(f"\nRSS during a 50 MB RETR: base {base / 1024:.1f} MB, peak {peak / 1024:.1f} MB, "
              f"growth {growth_mb:.1f} MB", file=sys.stderr)
        self.assertLess(growth_mb, 16, "the message was not streamed")
        self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))

    def test_drop_without_quit_commits_nothing(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        before = self.srv.message_files()
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertEqual(c.cmd("DELE 1"), b"+OK Message 1 deleted.\r\n")
        self.assertEqual(c.cmd("DELE 2"), b"+OK Message 2 deleted.\r\n")
        c.close()  # no QUIT
        self.srv.wait_log("committed=no", 1)
        # The next session gets the mailbox (the lock was released) with all three.
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertTrue(c.cmd("STAT").startswith(b"+OK 3 "))
        # Dropped in the middle of a RETR: nothing either.
        c.cmd("DELE 3")
        c.send(b"RETR 1\r\n")
        c.line()
        c.close()
        self.srv.wait_log("committed=no", 2)
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertTrue(c.cmd("STAT").startswith(b"+OK 3 "))
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        self.assertEqual([os.path.basename(p).split(":")[0] for p in self.srv.message_files()],
                         [os.path.basename(p).split(":")[0] for p in before])

    def test_dele_quit_expunge(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.login()
        ids = {}
        c.cmd("UIDL")
        for ln in c.multiline().split(b"\r\n")[:-2]:
            n, u = ln.split()
            ids[int(n)] = u
        self.assertEqual(c.cmd("DELE 2"), b"+OK Message 2 deleted.\r\n")
        self.assertEqual(c.cmd("RSET"), b"+OK Maildrop has 3 messages (%d octets).\r\n"
                         % sum(len(h.crlf(m)) for m in EDGE[:3]))
        self.assertEqual(c.cmd("DELE 2"), b"+OK Message 2 deleted.\r\n")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 1 message deleted.\r\n")
        self.assertTrue(c.eof())
        self.assertEqual(len(self.srv.message_files(expect=2)), 2)
        c = h.Raw(self.srv.port_plain)
        c.login()
        c.cmd("UIDL")
        left = [ln.split()[1] for ln in c.multiline().split(b"\r\n")[:-2]]
        self.assertEqual(left, [ids[1], ids[3]])  # UIDLs survive; the deleted one is gone
        c.cmd("QUIT")

    def test_one_session_per_mailbox(self):
        self.srv.deliver(EDGE[0])
        self.srv.start()
        a = h.Raw(self.srv.port_plain)
        a.login()
        b = h.Raw(self.srv.port_plain)
        b.cmd("USER alice")
        self.assertEqual(b.cmd("PASS secret"),
                         b"-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n")
        # Another user is not affected.
        c = h.Raw(self.srv.port_plain)
        c.login("bob")
        self.assertEqual(a.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        self.assertTrue(a.eof())
        b.login()
        b.cmd("QUIT")
        c.cmd("QUIT")

    def test_stls_drops_pipelined_plaintext(self):
        """RFC 2595 §3.1: commands sent in plaintext behind STLS are thrown away."""
        self.srv.deliver(EDGE[0])
        self.srv.start()
        c = h.Raw(self.srv.port)
        c.send(b"STLS\r\nUSER alice\r\n")
        self.assertEqual(c.line(), b"+OK Begin TLS negotiation.\r\n")
        self.assertEqual(c.buf, b"")
        ctx = h.tls_context(self.srv.cert)
        c.s = ctx.wrap_socket(c.s, server_hostname="127.0.0.1")
        self.assertEqual(c.cmd("PASS secret"),
                         b"-ERR No user name given; send USER first.\r\n")
        c.login()
        self.assertTrue(c.cmd("STAT").startswith(b"+OK 1 "))
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")

    def test_pipelining_500(self):
        for m in EDGE[:2]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.login()
        cmds = []
        for i in range(500):
            cmds.append([b"NOOP", b"STAT", b"LIST 1", b"UIDL 2", b"TOP 1 0"][i % 5])
        c.send(b"".join(x + b"\r\n" for x in cmds))
        for i, cmd in enumerate(cmds):
            r = c.line()
            self.assertTrue(r.startswith(b"+OK"), (i, cmd, r))
            if cmd == b"NOOP":
                self.assertEqual(r, b"+OK NOOP\r\n")
            elif cmd == b"LIST 1":
                self.assertTrue(r.startswith(b"+OK 1 "))
            elif cmd == b"UIDL 2":
                self.assertTrue(r.startswith(b"+OK 2 "))
            elif cmd == b"TOP 1 0":
                self.assertTrue(c.multiline().endswith(b"\r\n\r\n.\r\n"))
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")

    def test_limits(self):
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        self.assertEqual(c.cmd("USER " + "x" * 249),
                         b"-ERR Command line too long (RFC 2449: 255 octets), "
                         b"closing connection.\r\n")
        self.assertTrue(c.eof())
        c = h.Raw(self.srv.port_plain)
        for _ in range(19):
            self.assertEqual(c.cmd("BOGUS"), b"-ERR Unknown command.\r\n")
        self.assertEqual(c.cmd("BOGUS"), b"-ERR Too many bad commands, closing connection.\r\n")
        self.assertTrue(c.eof())
        self.srv.wait_log("event=too_many_bad_commands")
        # The idle timeout (1 s on this listener): -ERR, a log line, the connection ends,
        # and DELE marks are not committed.
        self.srv.deliver(EDGE[0])
        c = h.Raw(self.srv.port_idle)
        c.login()
        self.assertEqual(c.cmd("DELE 1"), b"+OK Message 1 deleted.\r\n")
        self.assertEqual(c.line(), b"-ERR Disconnected for inactivity.\r\n")
        self.assertTrue(c.eof())
        self.srv.wait_log("event=idle_timeout state=TRANSACTION")
        self.assertEqual(len(self.srv.message_files(expect=1)), 1)
        # APOP gets a clear answer; STLS on a plain listener too.
        c = h.Raw(self.srv.port_plain)
        self.assertEqual(c.cmd("APOP alice 00112233445566778899aabbccddeeff"),
                         b"-ERR [AUTH] APOP is not supported; use USER/PASS or AUTH.\r\n")
        self.assertEqual(c.cmd("STLS"), b"-ERR STLS is not available on this port.\r\n")
        c.cmd("QUIT")


class Pop3WireHide(Base):
    """The same under pop3_delete = hide: DELE + QUIT keeps the file for IMAP, flagged with
    $POP3Deleted, and no later POP3 session sees it."""
    extra = "pop3_delete = hide"

    def test_dele_quit_expunge(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertEqual(c.cmd("DELE 2"), b"+OK Message 2 deleted.\r\n")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 1 message deleted.\r\n")
        self.assertTrue(c.eof())
        def keyworded(fs):
            return [p for p in fs if ":2," in p and any(ch.islower() for ch in p.split(":2,")[1])]
        files = self.srv.message_files(
            expect=lambda fs: len(fs) == 3 and len(keyworded(fs)) == 1)
        self.assertEqual(len(files), 3)  # kept for IMAP
        kw = keyworded(files)
        self.assertEqual(len(kw), 1)  # one file carries a keyword letter
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertEqual(c.cmd("STAT"), b"+OK 2 %d\r\n"
                         % (len(h.crlf(EDGE[0])) + len(h.crlf(EDGE[2]))))
        c.cmd("QUIT")


class Pop3AndImap(Base):
    """POP3 and IMAP on one mailbox (DESIGN.md "POP3 semantics on the shared store")."""

    def imap(self):
        m = imaplib.IMAP4("127.0.0.1", self.srv.port_imap, timeout=30)
        m.login("alice", "secret")
        typ, data = m.select("INBOX")
        self.assertEqual(typ, "OK")
        return m, int(data[0])

    def flags(self, m):
        typ, data = m.fetch("1:*", "(FLAGS)")
        self.assertEqual(typ, "OK")
        return [imaplib.ParseFlags(x) for x in data if x]

    def test_seen_and_delete_reach_imap(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.login()
        c.cmd("RETR 1")
        c.multiline()
        c.cmd("TOP 2 0")
        c.multiline()
        self.assertEqual(c.cmd("NOOP"), b"+OK NOOP\r\n")  # the client waits: \Seen is set
        m, exists = self.imap()
        self.assertEqual(exists, 3)
        f = self.flags(m)
        self.assertIn(b"\\Seen", f[0])      # RETR
        self.assertNotIn(b"\\Seen", f[1])   # TOP
        self.assertEqual(c.cmd("DELE 2"), b"+OK Message 2 deleted.\r\n")
        self.assertEqual(len(self.flags(m)), 3)  # a mark only, until QUIT
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 1 message deleted.\r\n")
        self.assertTrue(c.eof())
        self.assertEqual(m.noop()[0], "OK")
        self.assertEqual(m.response("EXPUNGE"), ("EXPUNGE", [b"2"]))  # the phone is told
        self.assertEqual(len(self.flags(m)), 2)
        m.logout()

    def test_imap_expunge_during_pop3_session(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.login()
        total = sum(len(h.crlf(m)) for m in EDGE[:3])
        self.assertEqual(c.cmd("STAT"), b"+OK 3 %d\r\n" % total)
        m, _ = self.imap()
        self.assertEqual(m.store("2", "+FLAGS", "(\\Deleted)")[0], "OK")
        self.assertEqual(m.expunge()[0], "OK")
        m.logout()
        gone = b"-ERR Message 2 was removed by another session.\r\n"
        self.assertEqual(c.cmd("RETR 2"), gone)
        self.assertEqual(c.cmd("TOP 2 0"), gone)
        self.assertEqual(c.cmd("DELE 2"), gone)
        self.assertEqual(c.cmd("STAT"), b"+OK 3 %d\r\n" % total)  # the snapshot's numbers
        self.assertTrue(c.cmd("RETR 3").startswith(b"+OK"))
        self.assertEqual(c.multiline(), expected_wire(EDGE[2]))
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        self.assertEqual(len(self.srv.message_files(expect=2)), 2)


class Pop3AndImapHide(Pop3AndImap):
    extra = "pop3_delete = hide"

    def test_seen_and_delete_reach_imap(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertEqual(c.cmd("DELE 1"), b"+OK Message 1 deleted.\r\n")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 1 message deleted.\r\n")
        self.assertTrue(c.eof())
        m, exists = self.imap()
        self.assertEqual(exists, 3)  # the phone keeps it
        self.assertIn(b"$POP3Deleted", self.flags(m)[0])
        m.logout()
        c = h.Raw(self.srv.port_plain)
        c.login()
        self.assertEqual(c.cmd("STAT"), b"+OK 2 %d\r\n"
                         % (len(h.crlf(EDGE[1])) + len(h.crlf(EDGE[2]))))
        c.cmd("QUIT")


DAY = 86400


def fnv1a32(data):
    h32 = 0x811c9dc5
    for b in data:
        h32 = ((h32 ^ b) * 0x01000193) & 0xffffffff
    return h32


def checked_line(payload):
    return b"%08x %s\n" % (fnv1a32(payload), payload)


class Pop3Expire(Base):
    """pop3_expire_days (RFC 2449 EXPIRE): the first RETR is recorded in the folder's
    mailkeep-pop3-retrieved; a later login expires what was downloaded more than the
    retention ago. Time is injected by rewriting the record between sessions (checksummed
    lines, as the store writes them), never by waiting."""
    extra = "pop3_expire_days = 10"
    policy = "expunge"
    imap = Pop3AndImap.imap
    flags = Pop3AndImap.flags

    def record_path(self):
        return os.path.join(self.srv.state_dir(), "mailkeep-pop3-retrieved")

    def read_record(self):
        """(uidvalidity, {uid: time}); every line's checksum is checked."""
        with open(self.record_path(), "rb") as f:
            lines = f.read().split(b"\n")
        self.assertEqual(lines[-1], b"")
        out = {}
        for i, ln in enumerate(lines[:-1]):
            payload = ln[9:]
            self.assertEqual(ln[:9], b"%08x " % fnv1a32(payload))
            if i == 0:
                self.assertTrue(payload.startswith(b"R 1 "), ln)
                uv = int(payload[4:])
            else:
                uid, t = payload.split(b" ")
                out[int(uid)] = int(t)
        return uv, out

    def write_record(self, uv, recs):
        path = self.record_path()
        data = checked_line(b"R 1 %d" % uv) + b"".join(
            checked_line(b"%d %d" % (u, t)) for u, t in sorted(recs.items()))
        with open(path + ".test", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.srv._own(path + ".test")
        os.rename(path + ".test", path)

    def list_uidvalidity(self):
        with open(os.path.join(self.srv.state_dir(), "mailkeep-uidlist"), "rb") as f:
            return int(f.readline().split()[3])

    def test_retention(self):
        for m in EDGE[:3]:
            self.srv.deliver(m)
        self.srv.start()
        c = h.Raw(self.srv.port_plain)
        self.assertEqual(c.cmd("CAPA"), b"+OK Capability list follows\r\n")
        self.assertIn(b"\r\nEXPIRE 10\r\n", c.multiline())
        c.login()
        t0 = int(time.time())
        self.assertTrue(c.cmd("RETR 1").startswith(b"+OK"))
        self.assertEqual(c.multiline(), expected_wire(EDGE[0]))
        self.assertTrue(c.cmd("RETR 2").startswith(b"+OK"))
        self.assertEqual(c.multiline(), expected_wire(EDGE[1]))
        self.assertTrue(c.cmd("TOP 3 0").startswith(b"+OK"))  # not a download
        c.multiline()
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        self.assertTrue(c.eof())
        c.close()
        t1 = int(time.time())

        uv, recs = self.read_record()
        self.assertEqual(uv, self.list_uidvalidity())
        self.assertEqual(sorted(recs), [1, 2])
        for t in recs.values():
            self.assertTrue(t0 <= t <= t1, (t0, t, t1))

        # Message 1 was downloaded 11 days ago, message 2 nine days ago; 3 never.
        now = int(time.time())
        self.write_record(uv, {1: now - 11 * DAY, 2: now - 9 * DAY})
        c = h.Raw(self.srv.port_plain)
        kept = len(h.crlf(EDGE[1])) + len(h.crlf(EDGE[2]))
        self.assertEqual(c.login(), b"+OK Logged in, 2 messages (%d octets).\r\n" % kept)
        self.srv.wait_log("event=expired user=alice messages=1 days=10 policy=" + self.policy)
        self.assertTrue(c.cmd("RETR 1").startswith(b"+OK"))
        self.assertEqual(c.multiline(), expected_wire(EDGE[1]))
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        self.assertTrue(c.eof())
        c.close()
        self.check_store()

        # Nothing else is due: the next login sees the same two.
        c = h.Raw(self.srv.port_plain)
        self.assertEqual(c.login(), b"+OK Logged in, 2 messages (%d octets).\r\n" % kept)
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out, 0 messages deleted.\r\n")
        c.close()
        self.assertEqual(self.srv.log_text().count("event=expired "), 1)

    def check_store(self):
        self.assertEqual(len(self.srv.message_files(expect=2)), 2)
        m, exists = self.imap()
        self.assertEqual(exists, 2)
        m.logout()


class Pop3ExpireHide(Pop3Expire):
    """Under pop3_delete = hide, expiry hides from POP3 (kept for IMAP), as a DELE would."""
    extra = "pop3_expire_days = 10\npop3_delete = hide"
    policy = "hide"

    def check_store(self):
        self.assertEqual(len(self.srv.message_files(expect=3)), 3)
        m, exists = self.imap()
        self.assertEqual(exists, 3)
        f = self.flags(m)
        self.assertIn(b"$POP3Deleted", f[0])
        self.assertNotIn(b"$POP3Deleted", f[1])
        self.assertNotIn(b"$POP3Deleted", f[2])
        m.logout()


if __name__ == "__main__":
    unittest.main(verbosity=2)
