"""OBJECTID (RFC 8474) and SAVEDATE (RFC 8514) against the real binary, exact bytes: a folder's
MAILBOXID from CREATE is what STATUS and SELECT report, survives RENAME and a restart, and a
folder created again after DELETE gets a new one; a message delivered by an MTA has the save
date its Maildir name gives, THREADID NIL, and keeps its EMAILID through MOVE and a restart,
where the MOVE's save date is the time of the move.
"""
import calendar
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Raw, Server, USERS  # noqa: E402

PW = USERS["alice"]
MSG = b"From: a@example.org\r\nSubject: objectid\r\n\r\nhello\r\n"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def imap_date(t):
    return time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(t)).lstrip("0").rjust(26)


def login(srv):
    c = Raw(srv.port_plain)
    out = c.cmd("l", f'LOGIN alice "{PW}"')
    check(out.startswith(b"l OK [CAPABILITY ") and b" OBJECTID SAVEDATE" in out, out)
    return c


def main():
    srv = Server()
    try:
        srv.start()
        c = login(srv)
        out = c.cmd("a", "CREATE Work")
        m = re.fullmatch(rb"a OK \[MAILBOXID \((F[0-9a-f]{32})\)\] Create completed\.\r\n", out)
        check(m, out)
        work = m.group(1)
        out = c.cmd("b", "STATUS Work (MESSAGES MAILBOXID)")
        check(out == b"* STATUS Work (MESSAGES 0 MAILBOXID (" + work + b"))\r\n"
              b"b OK Status completed.\r\n", out)
        check(c.cmd("c", "RENAME Work Play") == b"c OK Rename completed.\r\n", "rename")
        out = c.cmd("d", "STATUS Play (MAILBOXID)")
        check(out == b"* STATUS Play (MAILBOXID (" + work + b"))\r\nd OK Status completed.\r\n",
              out)
        c.cmd("e", "CREATE Gone")
        gone1 = re.search(rb"MAILBOXID \((\w+)\)", c.cmd("f", "STATUS Gone (MAILBOXID)")).group(1)
        check(c.cmd("g", "DELETE Gone") == b"g OK Delete completed.\r\n", "delete")
        out = c.cmd("h", "CREATE Gone")
        check(b"[MAILBOXID (" in out and gone1 not in out and work not in out, out)

        name = srv.deliver(MSG)
        delivered = int(name.split(".")[0])
        out = c.cmd("i", "SELECT INBOX")
        inbox = re.search(rb"\* OK \[MAILBOXID \((F[0-9a-f]{32})\)\] Ok\r\n", out)
        check(inbox, out)
        out = c.cmd("j", "FETCH 1 (EMAILID THREADID SAVEDATE)")
        m = re.fullmatch(rb'\* 1 FETCH \(EMAILID \((M[0-9a-f]{16})\) THREADID NIL SAVEDATE "(.*)"\)'
                         rb"\r\nj OK Fetch completed\.\r\n", out)
        check(m and m.group(2).decode() == imap_date(delivered), (out, imap_date(delivered)))
        eid = m.group(1)
        day = time.strftime("%d-%b-%Y", time.gmtime(delivered))
        out = c.cmd("k", f"UID SEARCH SAVEDON {day} EMAILID {eid.decode()} SAVEDATESUPPORTED")
        check(out == b"* SEARCH 1\r\nk OK Search completed.\r\n", out)
        check(c.cmd("k2", "SEARCH THREADID T1") == b"* SEARCH\r\nk2 OK Search completed.\r\n",
              "threadid")
        before = int(time.time())
        out = c.cmd("m", "MOVE 1 Play")
        check(out.endswith(b"m OK Move completed.\r\n"), out)
        after = int(time.time())
        c.cmd("n", "SELECT Play")
        out = c.cmd("o", "FETCH 1 (EMAILID SAVEDATE)")
        m = re.fullmatch(rb'\* 1 FETCH \(EMAILID \(' + eid + rb'\) SAVEDATE "(.*)"\)\r\n'
                         rb"o OK Fetch completed\.\r\n", out)
        check(m, out)
        moved = calendar.timegm(time.strptime(m.group(1).decode().strip(),
                                              "%d-%b-%Y %H:%M:%S +0000"))
        check(before <= moved <= after, (before, moved, after))
        c.cmd("z", "LOGOUT")
        c.close()

        srv.stop()
        srv.started.clear()
        srv.start()
        c = login(srv)
        out = c.cmd("a", "STATUS Play (MAILBOXID)")
        check(out == b"* STATUS Play (MAILBOXID (" + work + b"))\r\na OK Status completed.\r\n",
              out)
        out = c.cmd("b", "SELECT Play")
        check(b"* OK [MAILBOXID (" + work + b")] Ok\r\n" in out, out)
        out = c.cmd("c", "FETCH 1 (EMAILID SAVEDATE)")
        check(out == b'* 1 FETCH (EMAILID (' + eid + b') SAVEDATE "' +
              imap_date(moved).encode() + b'")\r\nc OK Fetch completed.\r\n', out)
        out = c.cmd("d", "STATUS INBOX (MAILBOXID)")
        check(out == b"* STATUS INBOX (MAILBOXID (" + inbox.group(1) + b"))\r\n"
              b"d OK Status completed.\r\n", out)
        c.cmd("z", "LOGOUT")
        c.close()
        print("imap_objectid: all passed")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
