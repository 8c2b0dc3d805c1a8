"""IMAP against the real binary with Python's imaplib: plain (loopback), STARTTLS and IMAPS;
LOGIN and AUTHENTICATE, CAPABILITY, SELECT/EXAMINE, APPEND, FETCH, STORE, SEARCH, COPY,
MOVE, EXPUNGE, LIST/LSUB/STATUS, CREATE/RENAME/DELETE, IDLE with a second session, LOGOUT."""
import imaplib
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, Raw, USERS  # noqa: E402

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Hello\r\n"
       b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
       b"Hi Bob,\r\nthe quick brown fox.\r\n")

EXPECTED_CAPS = ["IMAP4rev1", "IMAP4rev2", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE", "NAMESPACE",
                 "UNSELECT", "UIDPLUS", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS",
                 "SPECIAL-USE", "ESEARCH", "SEARCHRES", "MOVE", "STATUS=SIZE", "BINARY"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(res, what):
    typ, data = res
    check(typ == "OK", f"{what}: {typ} {data}")
    return data


def test_plain_session(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.port_plain)
    check(m.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1"), m.welcome)
    caps = list(m.capabilities)
    check("AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps, caps)
    ok(m.login("alice", USERS["alice"]), "login")
    for c in EXPECTED_CAPS:
        check(c in m.capabilities or c in ok(m.capability(), "capa")[0].decode(), c)
    data = ok(m.select("INBOX"), "select")
    check(data == [b"0"], data)
    ok(m.append("INBOX", r"(\Flagged)", imaplib.Time2Internaldate(1793620800), MSG), "append")
    check(ok(m.noop(), "noop") is not None, "noop")
    typ, data = m.fetch("1", "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] UID)")
    check(typ == "OK", data)
    check(b"RFC822.SIZE %d" % len(MSG) in data[0][0], data)
    check(data[0][1] == b"Subject: Hello\r\n\r\n", data)
    check(b"\\Flagged" in data[0][0], data)
    typ, data = m.fetch("1", "(BODY[])")
    check(data[0][1] == MSG, data)
    typ, data = m.fetch("1", "(FLAGS)")
    check(b"\\Seen" in data[0], data)
    typ, data = m.uid("FETCH", "1:*", "(ENVELOPE BODYSTRUCTURE)")
    check(typ == "OK" and b"ENVELOPE" in data[0] and b"BODYSTRUCTURE" in data[0], data)
    ok(m.store("1", "+FLAGS", "(\\Answered $Label1)"), "store")
    typ, data = m.fetch("1", "(FLAGS)")
    check(b"$Label1" in data[0] and b"\\Answered" in data[0], data)
    check(ok(m.search(None, "TEXT", "fox"), "search") == [b"1"], "search fox")
    check(ok(m.search(None, "UNANSWERED"), "search") == [b""], "search unanswered")
    check(ok(m.uid("SEARCH", "ALL"), "uid search") == [b"1"], "uid search")
    ok(m.create("Work"), "create")
    typ, data = m.copy("1", "Work")
    check(typ == "OK", data)
    ok(m.append("INBOX", None, None, MSG), "append 2")
    typ, data = m._simple_command("MOVE", "2", "Work")
    check(typ == "OK", data)
    typ, data = m.status("Work", "(MESSAGES UIDNEXT UNSEEN SIZE)")
    check(typ == "OK" and b"MESSAGES 2" in data[0] and b"UIDNEXT 3" in data[0], data)
    typ, data = m.list()
    names = b" ".join(data)
    check(typ == "OK" and b"INBOX" in names and b"Work" in names and b"\\Sent" in names, data)
    ok(m.rename("Work", "Done"), "rename")
    ok(m.subscribe("Done"), "subscribe")
    typ, data = m.lsub()
    check(typ == "OK" and any(b"Done" in d for d in data), data)
    ok(m.store("1", "+FLAGS", "\\Deleted"), "store deleted")
    typ, data = m.expunge()
    # imaplib gathers every EXPUNGE seen since the last read (MOVE's too): the last is ours.
    check(typ == "OK" and data[-1] == b"1", data)
    ok(m.close(), "close")
    typ, data = m.select("Done", readonly=True)
    check(typ == "OK" and data == [b"2"], data)
    typ, data = m.store("1", "+FLAGS", "\\Seen")
    check(typ == "NO", data)
    ok(m.unselect(), "unselect")
    ok(m.delete("Done"), "delete")
    typ, data = m.delete("Done")
    check(typ == "NO" and b"NONEXISTENT" in data[0], data)
    typ, data = m.logout()
    check(typ == "BYE", (typ, data))


def test_tls_and_auth(srv):
    ctx = srv.tls_context()
    # STARTTLS: before it plaintext logins are off for a non-loopback client; from loopback
    # they are allowed, so check the upgrade and the capability reset.
    m = imaplib.IMAP4("127.0.0.1", srv.port)
    check("STARTTLS" in m.capabilities, m.capabilities)
    ok(m.starttls(ssl_context=ctx), "starttls")
    check("STARTTLS" not in m.capabilities, m.capabilities)
    ok(m.login("bob", USERS["bob"]), "login after starttls")
    ok(m.logout(), "logout") if False else m.logout()
    # Implicit TLS, AUTHENTICATE PLAIN with an initial response (imaplib sends SASL-IR? no:
    # it waits for the continuation), and a password with quotes and a backslash.
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port_tls, ssl_context=ctx)
    user, pw = "carol", USERS["carol"]
    ok(m.authenticate("PLAIN", lambda _: f"\0{user}\0{pw}".encode()), "authenticate")
    ok(m.select(), "select")
    m.logout()
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port_tls, ssl_context=ctx)
    try:
        m.login("alice", "wrong")
        raise AssertionError("wrong password accepted")
    except imaplib.IMAP4.error as e:
        check("AUTHENTICATIONFAILED" in str(e), e)
    m.logout()
    # Raw: SASL-IR and a login with literals.
    r = Raw(srv.port_plain)
    out = r.cmd("a", "AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")
    check(out.startswith(b"a OK [CAPABILITY IMAP4rev1"), out)
    r.close()
    r = Raw(srv.port_plain)
    r.send(b"b LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    out = r.until_tagged("b")
    check(out.startswith(b"b OK [CAPABILITY"), out)
    out = r.cmd("c", "LOGOUT")
    check(out == b"* BYE Logging out.\r\nc OK Logout completed.\r\n", out)
    check(r.eof(), "closed after LOGOUT")


def test_idle(srv):
    a = Raw(srv.port_plain)
    a.cmd("l", "LOGIN alice secret")
    a.cmd("s", "SELECT INBOX")
    a.send(b"i IDLE\r\n")
    check(a.line() == b"+ idling\r\n", "idle continuation")
    # Another session appends: A hears of it at once.
    b = imaplib.IMAP4("127.0.0.1", srv.port_plain)
    b.login("alice", USERS["alice"])
    t0 = time.monotonic()
    b.append("INBOX", None, None, MSG)
    ln = a.line()
    check(ln.endswith(b" EXISTS\r\n"), ln)
    # A message delivered into new/ by an MTA reaches A too, within the deadline.
    srv.deliver(MSG)
    t1 = time.monotonic()
    while True:
        ln = a.line()
        if ln.endswith(b" EXISTS\r\n"):
            break
    took = time.monotonic() - t1
    check(took < 2.0, f"delivery took {took:.3f}s")
    print(f"idle: append push {t1 - t0:.3f}s, delivery push {took * 1000:.0f} ms")
    # A flag change by B arrives as FETCH.
    b.select("INBOX")
    b.store("1", "+FLAGS", "\\Flagged")
    ln = a.line()
    while ln.endswith(b" RECENT\r\n"):
        ln = a.line()
    check(ln.startswith(b"* 1 FETCH (UID ") and b"FLAGS (\\Flagged" in ln, ln)
    a.send(b"DONE\r\n")
    out = a.until_tagged("i")
    check(out.endswith(b"i OK Idle completed.\r\n"), out)
    b.logout()
    a.close()


def main():
    srv = Server().start()
    try:
        test_plain_session(srv)
        test_tls_and_auth(srv)
        test_idle(srv)
    except Exception:
        print("".join(srv.log[-60:]))
        raise
    finally:
        rc = srv.stop()
        srv.cleanup()
    check(rc == 0, f"mailkeep exit status {rc}")
    print("imap_imaplib: ok")


if __name__ == "__main__":
    main()
