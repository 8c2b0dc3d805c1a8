"""IMAP figures against the real binary (never run by ctest; prints figures):

    MK_BINARY=build/mailkeep python3 tests/bench/bench_imap.py [COUNT]

- UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE) over COUNT (10,000) messages,
  cold (nothing parsed yet) and warm (parsed data in the folder's cache);
- SEARCH TEXT over them;
- FETCH 1:* BODY[] throughput;
- NOOP latency (p50/p99) on one connection while 10 others run full-folder SEARCH TEXT;
- server RSS per idle IDLE connection, with 1,000 of them.
"""
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from imap_harness import Server, Raw, USERS  # noqa: E402

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


def login(srv):
    r = Raw(srv.port_plain, timeout=600)
    r.cmd("l", f"LOGIN alice {USERS['alice']}")
    return r


def timed(r, tag, line):
    t = time.monotonic()
    out = r.cmd(tag, line)
    dt = time.monotonic() - t
    if not out.splitlines()[-1].startswith(f"{tag} OK".encode()):
        raise AssertionError(out[-300:])
    return dt, out


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    srv = Server("max_connections = 4000\nmax_connections_per_address = 4000").start()
    try:
        total = fill(srv, count)
        print(f"messages: {count}, {total / 1e6:.1f} MB")
        r = login(srv)
        dt, _ = timed(r, "s", "SELECT INBOX")
        print(f"SELECT (first open, directory scan): {dt * 1000:.0f} ms")
        items = "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
        dt, out = timed(r, "f1", f"UID FETCH 1:* {items}")
        print(f"UID FETCH 1:* {items} cold: {dt:.2f} s ({len(out) / 1e6:.1f} MB of reply)")
        dt, _ = timed(r, "f2", f"UID FETCH 1:* {items}")
        print(f"... warm: {dt:.2f} s")
        dt, out = timed(r, "t", "SEARCH TEXT needle")
        print(f"SEARCH TEXT needle: {dt:.2f} s ({len(out.split()) - 5} hits)")
        dt, out = timed(r, "b", "FETCH 1:* BODY.PEEK[]")
        print(f"FETCH 1:* BODY.PEEK[]: {dt:.2f} s, {len(out) / dt / 1e6:.0f} MB/s")

        # NOOP latency under load.
        stop = threading.Event()

        def searcher():
            c = login(srv)
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
        print(f"NOOP with 10 connections searching: {len(lat)} samples, p50 "
              f"{lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms")
        r.close()

        # RSS per idle IDLE connection.
        def rss():
            with open(f"/proc/{srv.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
            return 0
        base = rss()
        conns = []
        for i in range(1000):
            c = login(srv)
            c.cmd("s", "SELECT INBOX")
            c.send(b"i IDLE\r\n")
            assert c.line() == b"+ idling\r\n"
            conns.append(c)
        after = rss()
        print(f"1000 idling connections (INBOX of {count} selected): "
              f"{(after - base) / 1000:.0f} bytes of RSS each")
        for c in conns:
            c.close()
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
