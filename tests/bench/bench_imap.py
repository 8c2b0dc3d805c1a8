"""IMAP figures against the real binary (never run by ctest; prints figures):

    MK_BINARY=build/mailkeep python3 tests/bench/bench_imap.py [COUNT] [--dovecot]

With --dovecot the same client runs against Debian's Dovecot (dovecot-imapd) on the same
Maildir, same users, same certificate, side by side.

- UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE) over COUNT (10,000) messages,
  cold (nothing parsed yet) and warm (parsed data in the folder's cache);
- SEARCH TEXT over them;
- FETCH 1:* BODY[] throughput;
- NOOP latency (p50/p99) on one connection while 10 others run full-folder SEARCH TEXT;
- server RSS per idle IDLE connection, with 1,000 of them.
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from imap_harness import Server, Raw, USERS, free_port  # noqa: E402

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def make_message(i, rnd):
    body = "\r\n".join(" ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(25))
    if i % 100 == 0:
        body += "\r\nthe needle is here\r\n"
    return (f"From: Sender {i} <s{i}@example.org>\r\nTo: alice@example.org\r\n"
            f"Subject: message {i} {rnd.choice(WORDS)}\r\n"
            f"Date: Mon, 2 Nov 2026 10:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <{i}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n").encode()


def fill(srv, count):
    md = srv.maildir("alice")
    for sub in ("", "tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
        if srv.owner:
            os.chown(os.path.join(md, sub), *srv.owner)
    rnd = random.Random(1)
    total = 0
    for i in range(count):
        data = make_message(i, rnd)
        total += len(data)
        name = f"{1700000000 + i}.M{i}P1.bench:2,S"
        p = os.path.join(md, "cur", name)
        with open(p, "wb") as f:
            f.write(data)
        if srv.owner:
            os.chown(p, *srv.owner)
    return total


def login(port):
    r = Raw(port, timeout=600)
    out = r.cmd("l", f"LOGIN alice {USERS['alice']}")
    if b"l OK" not in out:
        raise AssertionError(out)
    return r


def dovecot_start(srv):
    """Dovecot on the same Maildir with the same users (a passwd-file)."""
    d = os.path.join(srv.dir, "dovecot")
    os.makedirs(os.path.join(d, "run"))
    passwd = os.path.join(d, "passwd")
    owner = srv.owner or (os.getuid(), os.getgid())
    with open(passwd, "w") as f:
        for u, p in USERS.items():
            f.write(f"{u}:{{PLAIN}}{p}:{owner[0]}:{owner[1]}::{srv.mail}/{u}\n")
    port = free_port()
    conf = os.path.join(d, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{srv.mail}/%u
mail_max_userip_connections = 5000
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = 2000
}}
service imap {{
  process_limit = 2000
}}
default_client_limit = 5000
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            if s.makefile("rb").readline().startswith(b"* OK"):
                s.close()
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("dovecot did not start; see " + os.path.join(d, "dovecot.log"))
        time.sleep(0.05)  # waiting for another program to listen, not in a test
    return proc, port


def tree_rss(pid):
    """RSS of pid and all its descendants, in bytes."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        todo += children.get(q, [])
        try:
            with open(f"/proc/{q}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def timed(r, tag, line):
    t = time.monotonic()
    out = r.cmd(tag, line)
    dt = time.monotonic() - t
    if not out.splitlines()[-1].startswith(f"{tag} OK".encode()):
        raise AssertionError(out[-300:])
    return dt, out


def hits(out):
    return sum(len(ln.split()) - 2 for ln in out.split(b"\r\n") if ln.startswith(b"* SEARCH"))


def measure(name, port, pid, count, load=True):
    r = login(port)
    dt, _ = timed(r, "s", "SELECT INBOX")
    print(f"{name}: SELECT (first open): {dt * 1000:.0f} ms")
    items = "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
    dt, out = timed(r, "f1", f"UID FETCH 1:* {items}")
    print(f"{name}: UID FETCH 1:* {items} cold: {dt:.2f} s ({len(out) / 1e6:.1f} MB)")
    dt, _ = timed(r, "f2", f"UID FETCH 1:* {items}")
    print(f"{name}: ... warm: {dt:.2f} s")
    dt, out = timed(r, "t", "SEARCH TEXT needle")
    print(f"{name}: SEARCH TEXT needle: {dt:.2f} s ({hits(out)} hits)")
    dt, _ = timed(r, "t2", "SEARCH TEXT needle")
    print(f"{name}: SEARCH TEXT needle again: {dt:.2f} s")
    dt, out = timed(r, "b", "FETCH 1:* BODY.PEEK[]")
    print(f"{name}: FETCH 1:* BODY.PEEK[]: {dt:.2f} s, {len(out) / dt / 1e6:.0f} MB/s")
    if not load:
        r.close()
        return

    stop = threading.Event()

    def searcher():
        c = login(port)
        c.cmd("s", "SELECT INBOX")
        n = 0
        while not stop.is_set():
            c.cmd(f"x{n}", "SEARCH TEXT needle")
            n += 1
        c.close()
    threads = [threading.Thread(target=searcher, daemon=True) for _ in range(10)]
    for t in threads:
        t.start()
    lat = []
    end = time.monotonic() + 10
    i = 0
    while time.monotonic() < end:
        dt, _ = timed(r, f"n{i}", "NOOP")
        lat.append(dt)
        i += 1
    stop.set()
    for t in threads:
        t.join(600)
    lat.sort()
    print(f"{name}: NOOP while 10 connections run SEARCH TEXT: {len(lat)} samples, p50 "
          f"{lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms")
    r.close()

    base = tree_rss(pid)
    conns = []
    for i in range(1000):
        c = login(port)
        c.cmd("s", "SELECT INBOX")
        c.send(b"i IDLE\r\n")
        ln = c.line()
        assert ln.startswith(b"+ "), ln
        conns.append(c)
    after = tree_rss(pid)
    print(f"{name}: 1000 idling connections (INBOX of {count} selected): "
          f"{(after - base) / 1000:.0f} bytes of RSS each")
    for c in conns:
        c.close()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 10000
    srv = Server("max_connections = 4000\nmax_connections_per_address = 4000").start()
    try:
        total = fill(srv, count)
        print(f"messages: {count}, {total / 1e6:.1f} MB")
        measure("mailkeep", srv.port_plain, srv.proc.pid, count)
        if "--dovecot" in sys.argv and shutil.which("dovecot"):
            proc, port = dovecot_start(srv)
            try:
                # The load and 1,000-IDLE parts stall against this Dovecot set-up (its
                # per-user process limits); only the single-connection figures are compared.
                measure("dovecot", port, proc.pid, count, load=False)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
