"""IMAP against the real binary with real clients: curl (imap:// LIST, SELECT, FETCH, SEARCH,
APPEND with -T) and mbsync (a two-way sync of every folder to a local Maildir over IMAPS: no
change and no duplicate on the second run; flag changes and deletions on each side carried
to the other)."""
import imaplib
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, USERS  # noqa: E402

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: curl test\r\n"
       b"Message-ID: <c1@example.org>\r\n\r\nHello from the store.\r\n")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(args, **kw):
    p = subprocess.run(args, capture_output=True, timeout=120, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}):\n{p.stdout.decode()}\n"
                             f"{p.stderr.decode()}")
    return p.stdout


def test_curl(srv):
    base = f"imap://127.0.0.1:{srv.port_plain}"
    auth = ["-u", f"alice:{USERS['alice']}", "-s", "-S", "--max-time", "60"]
    path = os.path.join(srv.dir, "curl.eml")
    with open(path, "wb") as f:
        f.write(MSG)
    run(["curl"] + auth + ["-T", path, f"{base}/INBOX"])
    out = run(["curl"] + auth + [f"{base}/"])
    check(b"INBOX" in out and b"Sent" in out, out)
    out = run(["curl"] + auth + [f"{base}/INBOX;UID=1"])
    check(out == MSG, out)
    out = run(["curl"] + auth + [f"{base}/INBOX?SUBJECT%20curl"])
    check(out == b"* SEARCH 1\r\n", out)
    out = run(["curl"] + auth + ["-X", "EXAMINE INBOX", f"{base}/"])
    check(b"1 EXISTS" in out, out)
    out = run(["curl"] + auth + [f"{base}/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)"])
    check(out == b"Subject: curl test\r\n\r\n", out)
    # STARTTLS required by curl, verified against the test certificate.
    out = run(["curl"] + auth + ["--ssl-reqd", "--cacert", srv.cert,
                                 f"imap://127.0.0.1:{srv.port}/INBOX;UID=1"])
    check(out == MSG, out)
    out = run(["curl"] + auth + ["--cacert", srv.cert, f"imaps://127.0.0.1:{srv.port_tls}/"])
    check(b"INBOX" in out, out)


def local_messages(local):
    out = {}
    for root, _dirs, files in os.walk(local):
        if os.path.basename(root) in ("cur", "new"):
            for n in files:
                with open(os.path.join(root, n), "rb") as f:
                    out[os.path.join(root, n)] = f.read()
    return out


def test_mbsync(srv):
    local = os.path.join(srv.dir, "local")
    os.makedirs(local)
    conf = os.path.join(srv.dir, "mbsyncrc")
    with open(conf, "w") as f:
        f.write(f"""IMAPAccount t
Host 127.0.0.1
Port {srv.port_tls}
User bob
Pass "{USERS['bob']}"
SSLType IMAPS
CertificateFile {srv.cert}
AuthMechs LOGIN

IMAPStore far
Account t

MaildirStore near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel c
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    env = dict(os.environ, HOME=srv.dir)

    def sync():
        return run(["mbsync", "-c", conf, "-a"], env=env)

    m = imaplib.IMAP4("127.0.0.1", srv.port_plain)
    m.login("bob", USERS["bob"])
    for i in range(3):
        m.append("INBOX", None, None, MSG.replace(b"c1@", b"m%d@" % i))
    m.append("Sent", "(\\Seen)", None, MSG)
    sync()
    msgs = local_messages(local)
    check(len(msgs) == 4, sorted(msgs))
    # A second run changes nothing and duplicates nothing.
    before = sorted(msgs)
    sync()
    check(sorted(local_messages(local)) == before, "second run changed the local side")
    m.select("INBOX")
    check(m.search(None, "ALL")[1] == [b"1 2 3"], m.search(None, "ALL"))
    # Server side: flag one, delete one. Local side: the flag and the deletion show.
    m.store("1", "+FLAGS", "\\Flagged")
    m.store("2", "+FLAGS", "\\Deleted")
    m.expunge()
    sync()
    inbox = [p for p in local_messages(local) if "/INBOX/" in p]
    check(len(inbox) == 2, inbox)
    check(any(p.split(":2,")[1].find("F") >= 0 for p in inbox), inbox)
    # Local side: mark one seen, delete the other; the server follows.
    flagged = [p for p in inbox if "F" in p.split(":2,")[1]][0]
    other = [p for p in inbox if p != flagged][0]
    os.rename(flagged, flagged + "S" if flagged.endswith("F") else flagged)
    os.unlink(other)
    sync()
    m.noop()
    typ, data = m.search(None, "ALL")
    check(data == [b"1"], data)
    typ, data = m.fetch("1", "(FLAGS)")
    check(b"\\Seen" in data[0] and b"\\Flagged" in data[0], data)
    # Nothing moves on a further run.
    before = sorted(local_messages(local))
    sync()
    check(sorted(local_messages(local)) == before, "third run changed the local side")
    m.logout()


def main():
    srv = Server().start()
    try:
        test_curl(srv)
        test_mbsync(srv)
    except Exception:
        print("".join(srv.log[-80:]))
        raise
    finally:
        rc = srv.stop()
        srv.cleanup()
    check(rc == 0, f"mailkeep exit status {rc}")
    print("imap_clients: ok")


if __name__ == "__main__":
    main()
