"""QUOTA (RFC 9208, QUOTA=RES-STORAGE, QUOTA=RES-MESSAGE) against the real binary (also as
imap_quota_mbox with mail_format = mbox).

alice has quota_storage = 4K from [server]; bob has a [user bob] section (3 messages, no size
limit); carol's section turns every limit off. The test asserts the exact bytes of
GETQUOTAROOT / GETQUOTA / SETQUOTA / STATUS DELETED-STORAGE, that mail delivered by an MTA is
counted when seen (never refused), that a refused APPEND (refused on its literal size, or at
the end on its CRLF size), MULTIAPPEND (all or nothing) and COPY / UID COPY leave nothing
behind (the folder's files and STATUS before and after), that MOVE between folders and
expunging work over quota, that a SIGHUP with a new limit reaches a session already logged in,
and that a restart counts the same usage again.
"""
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Raw, Server, USERS  # noqa: E402
from mk_testlib import MBOX, mbox_state_dir  # noqa: E402

QUOTA_CONF = """quota_storage = 4K

[user bob]
quota_messages = 3
quota_storage = 0

[user carol]
quota_storage = 0
"""


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eq(got, want):
    check(got == want, "\n got: %r\nwant: %r" % (got, want))


def message(size, lf=False):
    """A message of exactly SIZE bytes as sent (CRLF lines, or bare LF lines with lf)."""
    nl = b"\n" if lf else b"\r\n"
    head = b"Subject: quota test" + nl + nl
    body = bytearray()
    while len(head) + len(body) + 40 + len(nl) <= size:
        body += b"x" * 40 + nl
    rest = size - len(head) - len(body) - len(nl)
    body += b"y" * rest + nl
    data = head + bytes(body)
    assert len(data) == size, len(data)
    return data


def crlf_size(data):
    return len(re.sub(rb"(?<!\r)\n", b"\r\n", data))


def listing(srv, folder="INBOX"):
    """What a folder holds on disk: Maildir, every file of tmp/, new/, cur/ ('sub/name');
    mbox, the size of the folder's file and the names in its state directory."""
    if MBOX:
        import mbox_tools
        path = mbox_tools.mbox_path(srv.maildir(), folder)
        state = mbox_state_dir(srv.maildir(), folder)
        return (os.path.getsize(path) if os.path.exists(path) else None,
                sorted(os.listdir(state)) if os.path.isdir(state) else [])
    base = srv.maildir() if folder == "INBOX" else os.path.join(srv.maildir(), "." + folder)
    return {f"{sub}/{n}" for sub in ("tmp", "new", "cur")
            for n in os.listdir(os.path.join(base, sub))}


def wait_log(srv, pattern, count=1, timeout=30):
    """Wait (on the log itself, with a deadline) until PATTERN was logged COUNT times."""
    rx = re.compile(pattern)
    with srv.cond:
        ok = srv.cond.wait_for(lambda: sum(1 for ln in srv.log if rx.search(ln)) >= count,
                               timeout)
    check(ok, "no %r in the log:\n%s" % (pattern, "".join(srv.log[-30:])))


def wait_exists(c, tag):
    """IDLE until the server announces a new message (the socket's deadline bounds it), then
    DONE: an MTA's delivery seen, whenever the back-end notices it."""
    c.send(f"{tag} IDLE\r\n".encode())
    check(c.line().startswith(b"+ "), "no IDLE continuation")
    seen = b""
    while b" EXISTS\r\n" not in seen:
        seen += c.line()
    c.send(b"DONE\r\n")
    r = c.until_tagged(tag)
    check(r.endswith(f"{tag} OK Idle completed.\r\n".encode()), r)


def login(srv, user):
    c = Raw(srv.port_plain)
    pw = USERS[user].replace("\\", "\\\\").replace('"', '\\"')
    r = c.cmd("L", f'LOGIN {user} "{pw}"')
    check(r.startswith(b"L OK"), r)
    return c


def append(c, tag, data, mailbox="INBOX"):
    c.send(f"{tag} APPEND {mailbox} {{{len(data)}}}\r\n".encode())
    ln = c.line()
    if not ln.startswith(b"+"):
        return ln + c.until_tagged(tag)
    c.send(data + b"\r\n")
    return c.until_tagged(tag)


def status(c, tag, mailbox):
    r = c.cmd(tag, f"STATUS {mailbox} (MESSAGES UIDNEXT SIZE DELETED DELETED-STORAGE)")
    check(r.endswith(f"{tag} OK Status completed.\r\n".encode()), r)
    return [ln for ln in r.split(b"\r\n") if ln.startswith(b"* STATUS ")][0]


def main():
    srv = Server(extra_server=QUOTA_CONF).start()
    try:
        run(srv)
    except BaseException:
        sys.stderr.write("".join(srv.log[-60:]))
        raise
    finally:
        srv.cleanup()
    print("ok: QUOTA (GETQUOTAROOT, GETQUOTA, SETQUOTA, OVERQUOTA, reload, restart)")


def run(srv):
    c = login(srv, "alice")
    caps = c.cmd("C", "CAPABILITY")
    check(b" QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE " in caps, caps)

    # an empty store: limit 4K, nothing used
    eq(c.cmd("A1", "GETQUOTAROOT INBOX"),
       b'* QUOTAROOT INBOX ""\r\n* QUOTA "" (STORAGE 0 4)\r\nA1 OK Getquotaroot completed.\r\n')
    eq(c.cmd("A2", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 0 4)\r\nA2 OK Getquota completed.\r\n')
    eq(c.cmd("A3", "GETQUOTAROOT Trash"),
       b'* QUOTAROOT Trash ""\r\n* QUOTA "" (STORAGE 0 4)\r\nA3 OK Getquotaroot completed.\r\n')
    eq(c.cmd("A4", "GETQUOTAROOT Nope"), b"A4 NO [NONEXISTENT] Mailbox doesn't exist.\r\n")
    eq(c.cmd("A5", 'GETQUOTA "User quota"'), b"A5 NO [NONEXISTENT] No such quota root.\r\n")
    eq(c.cmd("A6", 'SETQUOTA "" (STORAGE 100000)'),
       b"A6 NO [NOPERM] Quota limits are set in the server configuration.\r\n")
    eq(c.cmd("A7", 'SETQUOTA "" (STORAGE lots)'),
       b"A7 BAD SETQUOTA needs a quota root and (resource limit ...).\r\n")
    eq(c.cmd("A8", "GETQUOTA"), b"A8 BAD GETQUOTA needs one quota root.\r\n")

    # 1000 bytes from an MTA (counted when seen) + an APPEND of 1500: 2500 bytes used
    srv.deliver(message(1000))
    r = append(c, "B1", message(1500))
    check(re.fullmatch(rb"B1 OK \[APPENDUID \d+ \d+\] Append completed.\r\n", r), r)
    eq(c.cmd("B2", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 3 4)\r\nB2 OK Getquota completed.\r\n')

    # refused on the literal's size: nothing written, nothing numbered
    before, st_before = listing(srv), status(c, "B3", "INBOX")
    eq(st_before, b"* STATUS INBOX (MESSAGES 2 UIDNEXT 3 DELETED 0 DELETED-STORAGE 0 "
                  b"SIZE 2500)")
    eq(append(c, "B4", message(1597)), b"B4 NO [OVERQUOTA] Quota exceeded\r\n")
    # refused at the end: the literal fits (1590 <= 1596 free) but its CRLF size does not
    lf = message(1590, lf=True)
    check(crlf_size(lf) > 1596, crlf_size(lf))
    eq(append(c, "B5", lf), b"B5 NO [OVERQUOTA] Quota exceeded\r\n")
    eq(listing(srv), before)
    eq(status(c, "B6", "INBOX"), st_before)
    # exactly the room left still fits
    r = append(c, "B7", message(1596))
    check(re.search(rb"B7 OK \[APPENDUID \d+ 3\] Append completed.\r\n$", r), r)
    eq(c.cmd("B8", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 4 4)\r\nB8 OK Getquota completed.\r\n')
    r = c.cmd("B9", "SELECT INBOX")
    check(b"* 3 EXISTS" in r, r)
    eq(c.cmd("B10", "STORE 3 +FLAGS.SILENT (\\Deleted)"), b"B10 OK Store completed.\r\n")
    eq(status(c, "B11", "INBOX"),
       b"* STATUS INBOX (MESSAGES 3 UIDNEXT 4 DELETED 1 DELETED-STORAGE 1596 SIZE 4096)")
    r = c.cmd("B12", "EXPUNGE")
    check(r.endswith(b"B12 OK Expunge completed.\r\n"), r)
    eq(c.cmd("B13", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 3 4)\r\nB13 OK Getquota completed.\r\n')

    # MULTIAPPEND: all or nothing (1596 bytes free)
    before, st_before = listing(srv), status(c, "C1", "INBOX")
    two = [message(790, lf=True), message(790, lf=True)]   # 1580 sent, more with CRLF
    check(sum(crlf_size(m) for m in two) > 1596, "sizes")
    c.send(f"C2 APPEND INBOX {{{len(two[0])}+}}\r\n".encode() + two[0] +
           f" (\\Seen) {{{len(two[1])}+}}\r\n".encode() + two[1] + b"\r\n")
    eq(c.until_tagged("C2"), b"C2 NO [OVERQUOTA] Quota exceeded\r\n")
    big = [message(800), message(800)]   # the second is refused on its literal size
    c.send(f"C3 APPEND INBOX {{{len(big[0])}+}}\r\n".encode() + big[0] +
           f" {{{len(big[1])}+}}\r\n".encode() + big[1] + b"\r\n")
    eq(c.until_tagged("C3"), b"C3 NO [OVERQUOTA] Quota exceeded\r\n")
    eq(listing(srv), before)
    eq(status(c, "C4", "INBOX"), st_before)
    small = [message(700), message(800)]
    c.send(f"C5 APPEND INBOX {{{len(small[0])}+}}\r\n".encode() + small[0] +
           f" {{{len(small[1])}+}}\r\n".encode() + small[1] + b"\r\n")
    r = c.until_tagged("C5")
    check(re.search(rb"C5 OK \[APPENDUID \d+ 4:5\] Append completed.\r\n$", r), r)
    eq(c.cmd("C6", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 4 4)\r\nC6 OK Getquota completed.\r\n')

    # COPY and UID COPY over the limit: refused, nothing in Trash; MOVE is free
    trash_before, trash_st = listing(srv, "Trash"), status(c, "D1", "Trash")
    eq(trash_st, b"* STATUS Trash (MESSAGES 0 UIDNEXT 1 DELETED 0 DELETED-STORAGE 0 SIZE 0)")
    r = c.cmd("D2", "COPY 1 Trash")
    check(r.endswith(b"D2 NO [OVERQUOTA] Quota exceeded\r\n"), r)
    r = c.cmd("D3", "UID COPY 1:* Trash")
    check(r.endswith(b"D3 NO [OVERQUOTA] Quota exceeded\r\n"), r)
    eq(listing(srv, "Trash"), trash_before)
    eq(status(c, "D4", "Trash"), trash_st)
    r = c.cmd("D5", "MOVE 1 Trash")
    check(re.fullmatch(rb"\* OK \[COPYUID \d+ 1 1\] Moved UIDs.\r\n\* 1 EXPUNGE\r\n"
                       rb"D5 OK Move completed.\r\n", r), r)
    eq(c.cmd("D6", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 4 4)\r\nD6 OK Getquota completed.\r\n')

    # an MTA delivers past the limit: counted when seen, never refused; reading, flags and
    # expunge still work over quota
    srv.deliver(message(3000))
    wait_exists(c, "E1")
    eq(c.cmd("E2", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 7 4)\r\nE2 OK Getquota completed.\r\n')
    eq(append(c, "E3", message(100)), b"E3 NO [OVERQUOTA] Quota exceeded\r\n")
    r = c.cmd("E4", "FETCH 1:* (RFC822.SIZE)")
    check(r.endswith(b"E4 OK Fetch completed.\r\n"), r)
    r = c.cmd("E5", "UID STORE 1:* +FLAGS (\\Deleted)")
    check(r.endswith(b"E5 OK Store completed.\r\n"), r)
    r = c.cmd("E6", "EXPUNGE")
    check(r.endswith(b"E6 OK Expunge completed.\r\n"), r)
    eq(c.cmd("E7", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 1 4)\r\nE7 OK Getquota completed.\r\n')

    # bob: only a message limit; carol: no limit at all, so no quota root
    b = login(srv, "bob")
    eq(b.cmd("F1", "GETQUOTAROOT inbox"),
       b'* QUOTAROOT INBOX ""\r\n* QUOTA "" (MESSAGE 0 3)\r\nF1 OK Getquotaroot completed.\r\n')
    for i in range(3):
        check(append(b, f"F2{i}", message(100)).startswith(f"F2{i} OK".encode()), i)
    eq(append(b, "F3", message(100)), b"F3 NO [OVERQUOTA] Quota exceeded\r\n")
    eq(b.cmd("F4", 'GETQUOTA ""'), b'* QUOTA "" (MESSAGE 3 3)\r\nF4 OK Getquota completed.\r\n')
    b.cmd("F5", "LOGOUT")
    k = login(srv, "carol")
    eq(k.cmd("G1", "GETQUOTAROOT INBOX"), b"* QUOTAROOT INBOX\r\nG1 OK Getquotaroot completed.\r\n")
    eq(k.cmd("G2", 'GETQUOTA ""'), b"G2 NO [NONEXISTENT] No such quota root.\r\n")
    k.cmd("G3", "LOGOUT")

    # SIGHUP with a new limit reaches alice's open session
    with open(srv.conf) as f:
        conf = f.read()
    with open(srv.conf, "w") as f:
        f.write(conf.replace("quota_storage = 4K\n", "quota_storage = 8K\n", 1))
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, r"event=reloaded")
    eq(c.cmd("H1", 'GETQUOTA ""'), b'* QUOTA "" (STORAGE 1 8)\r\nH1 OK Getquota completed.\r\n')
    r = append(c, "H2", message(3000))
    check(re.search(rb"H2 OK \[APPENDUID \d+ \d+\] Append completed.\r\n$", r), r)
    r = c.cmd("H3", "COPY 1 Trash")
    check(re.search(rb"H3 OK \[COPYUID \d+ \d+ 2\] Copy completed.\r\n$", r), r)
    usage = c.cmd("H4", 'GETQUOTAROOT INBOX')
    eq(usage, b'* QUOTAROOT INBOX ""\r\n* QUOTA "" (STORAGE 7 8)\r\nH4 OK Getquotaroot completed.\r\n')
    c.cmd("H5", "LOGOUT")

    # a restart counts the same usage from the folders
    srv.stop()
    srv.started.clear()
    srv.log.clear()
    srv.start()
    c = login(srv, "alice")
    eq(c.cmd("H4", "GETQUOTAROOT INBOX"), usage)
    c.cmd("Z", "LOGOUT")


if __name__ == "__main__":
    main()
