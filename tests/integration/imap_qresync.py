"""QRESYNC (RFC 7162) against the real binary: an offline client remembers a folder (UIDs,
flags, HIGHESTMODSEQ), disconnects; another IMAP session changes flags, expunges and
appends, a POP3 session deletes and downloads (RETR sets \\Seen), an MTA delivers; the client
reconnects with SELECT INBOX (QRESYNC (uidvalidity modseq known-uids)), applies only the
VANISHED (EARLIER) and FETCH responses it gets, and must end with exactly the server's state.

Round 1 keeps a third session on INBOX all along (the folder stays open: the server answers
from the expunges it remembers); round 2 lets the folder close in between (the server no
longer knows the expunges and reports the UIDs missing from known-uids). Both are exact.
Then UID FETCH ... (CHANGEDSINCE m VANISHED) and VANISHED instead of EXPUNGE while selected.
"""
import imaplib
import os
import poplib
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, Raw, USERS, free_port  # noqa: E402

PW = USERS["alice"]


def msg(i):
    return (f"From: a@example.org\r\nTo: alice@example.org\r\nSubject: m{i}\r\n"
            f"Message-ID: <{i}@example.org>\r\n\r\nbody {i}\r\n").encode()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def uid_set(uids):
    """A compact sequence set of sorted UIDs."""
    out, uids = [], sorted(uids)
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(out)


def parse_set(text):
    out = set()
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.update(range(min(a, b), max(a, b) + 1))
        else:
            out.add(int(part))
    return out


FETCH_RE = re.compile(rb"^\* \d+ FETCH \((.*)\)\r\n$")


def parse_fetch(line):
    m = FETCH_RE.match(line)
    check(m, line)
    body = m.group(1)
    uid = int(re.search(rb"UID (\d+)", body).group(1))
    flags = re.search(rb"FLAGS \(([^)]*)\)", body)
    modseq = re.search(rb"MODSEQ \((\d+)\)", body)
    return uid, (set(flags.group(1).split()) - {b"\\Recent"} if flags else None), \
        (int(modseq.group(1)) if modseq else None)


class Client:
    """The offline client: what it knows of INBOX."""

    def __init__(self):
        self.uidvalidity = None
        self.modseq = None
        self.msgs = {}  # uid -> set of flags
        self.vanished = set()
        self.wire = 0

    def login(self, port):
        c = Raw(port)
        check(b"OK" in c.cmd("l", f'LOGIN alice "{PW}"'), "login")
        out = c.cmd("e", "ENABLE QRESYNC")
        check(out == b"* ENABLED CONDSTORE QRESYNC\r\ne OK ENABLE completed.\r\n", out)
        return c

    def apply_select(self, out):
        for ln in out.split(b"\r\n"):
            m = re.search(rb"\[UIDVALIDITY (\d+)\]", ln)
            if m:
                check(self.uidvalidity in (None, int(m.group(1))), "uidvalidity changed")
                self.uidvalidity = int(m.group(1))
            m = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", ln)
            if m:
                self.modseq = int(m.group(1))
        self.apply(out)

    def apply(self, out):
        for ln in out.split(b"\r\n"):
            ln += b"\r\n"
            m = re.match(rb"^\* VANISHED (\(EARLIER\) )?([0-9:,]+)\r\n$", ln)
            if m:
                gone = parse_set(m.group(2).decode())
                self.vanished |= gone
                for u in gone:
                    self.msgs.pop(u, None)
            elif re.match(rb"^\* \d+ FETCH ", ln):
                uid, flags, modseq = parse_fetch(ln)
                check(flags is not None and modseq is not None, ln)
                self.msgs[uid] = flags

    def first_sync(self, port):
        c = self.login(port)
        out = c.cmd("s", "SELECT INBOX")
        self.apply_select(out)
        self.apply(c.cmd("f", "UID FETCH 1:* (FLAGS)"))
        c.cmd("o", "LOGOUT")
        c.close()

    def resync(self, port, known=True):
        c = self.login(port)
        known_part = " " + uid_set(self.msgs) if known and self.msgs else ""
        self.vanished = set()
        out = c.cmd("s", f"SELECT INBOX (QRESYNC ({self.uidvalidity} {self.modseq}{known_part}))")
        self.wire = len(out)
        check(out.endswith(b"s OK [READ-WRITE] Select completed.\r\n"), out)
        self.apply_select(out)
        return c, out


def server_state(port):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("alice", PW)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
    check(typ == "OK", data)
    state = {}
    for item in data:
        if item is None:
            continue
        raw = item if isinstance(item, bytes) else item[0]
        uid = int(re.search(rb"UID (\d+)", raw).group(1))
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", raw).group(1).split()) - {b"\\Recent"}
        state[uid] = flags
    m.logout()
    return state


def change_elsewhere(srv, pop3_port, round_no):
    """Another IMAP session, a POP3 session and an MTA change INBOX."""
    m = imaplib.IMAP4("127.0.0.1", srv.port_plain)
    m.login("alice", PW)
    m.select("INBOX")
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = [int(x) for x in data[0].split()]
    check(len(uids) >= 8, uids)
    m.uid("STORE", f"{uids[2]},{uids[3]}", "+FLAGS", "(\\Flagged $Work)")
    m.uid("STORE", str(uids[4]), "+FLAGS", "(\\Answered)")
    m.uid("STORE", f"{uids[5]},{uids[6]}", "+FLAGS", "(\\Deleted)")
    check(m.expunge()[0] == "OK", "expunge")
    m.append("INBOX", "(\\Draft)", None, msg(100 + round_no))
    m.logout()
    p = poplib.POP3("127.0.0.1", pop3_port)
    p.user("alice")
    p.pass_(PW)
    p.dele(1)
    p.dele(2)
    p.retr(3)  # \Seen (pop3_retr_sets_seen = yes)
    p.quit()
    srv.deliver(msg(200 + round_no))


def main():
    srv = Server()
    pop3_port = free_port()
    with open(srv.conf, "a") as f:
        f.write(f"\n[listener pop3]\nprotocol = pop3\naddress = 127.0.0.1\nport = {pop3_port}\n"
                "tls = none\n")
    for i in range(20):
        srv.deliver(msg(i))
    srv.start()
    try:
        client = Client()
        client.first_sync(srv.port_plain)
        check(len(client.msgs) == 20, client.msgs)
        check(client.msgs == server_state(srv.port_plain), "first sync")

        # Round 1: a keeper holds INBOX open, so the expunges are remembered.
        keeper = Raw(srv.port_plain)
        keeper.cmd("l", f'LOGIN alice "{PW}"')
        keeper.cmd("s", "EXAMINE INBOX")
        before = set(client.msgs)
        change_elsewhere(srv, pop3_port, 1)
        c, out = client.resync(srv.port_plain)
        truth = server_state(srv.port_plain)
        check(client.msgs == truth, f"round 1:\n{out!r}\nclient {client.msgs}\nserver {truth}")
        check(client.vanished == before - set(truth), (client.vanished, before, truth))
        c.cmd("o", "LOGOUT")
        c.close()
        keeper.cmd("o", "LOGOUT")
        keeper.close()

        # Round 2: nothing holds INBOX between the sessions.
        before = set(client.msgs)
        change_elsewhere(srv, pop3_port, 2)
        c, out = client.resync(srv.port_plain)
        truth = server_state(srv.port_plain)
        check(client.msgs == truth, f"round 2:\n{out!r}\nclient {client.msgs}\nserver {truth}")
        check(client.vanished == before - set(truth), (client.vanished, before, truth))

        # Selected with QRESYNC: another session's expunge arrives as VANISHED, a flag
        # change as FETCH with UID and MODSEQ; then UID FETCH (CHANGEDSINCE VANISHED).
        old_modseq = client.modseq
        other = imaplib.IMAP4("127.0.0.1", srv.port_plain)
        other.login("alice", PW)
        other.select("INBOX")
        uids = sorted(truth)
        other.uid("STORE", str(uids[0]), "+FLAGS", "(\\Deleted)")
        other.uid("STORE", str(uids[1]), "+FLAGS", "(\\Seen \\Flagged)")
        other.expunge()
        out = c.cmd("n", "NOOP")
        lines = out.split(b"\r\n")
        check(lines[0] == f"* VANISHED {uids[0]}".encode(), out)
        uid, flags, modseq = parse_fetch(lines[1] + b"\r\n")
        check(lines[1].startswith(b"* 1 FETCH (UID ") and uid == uids[1] and
              {b"\\Seen", b"\\Flagged"} <= flags and modseq > old_modseq, out)
        check(lines[2] == b"n OK NOOP completed.", out)
        out = c.cmd("f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {old_modseq} VANISHED)")
        lines = out.split(b"\r\n")
        check(lines[0] == f"* VANISHED (EARLIER) {uids[0]}".encode(), out)
        check(len(lines) == 4 and b"UID %d " % uids[1] in lines[1], out)
        c.cmd("o", "LOGOUT")
        c.close()
        other.logout()
        print("ok: QRESYNC resync exact in both rounds")
    except Exception:
        sys.stderr.write(srv.log_text()[-4000:])
        raise
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
