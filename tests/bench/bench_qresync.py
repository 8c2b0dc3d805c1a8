"""QRESYNC figures against the real binary (never run by ctest; prints figures):

    MK_BINARY=build/mailkeep python3 tests/bench/bench_qresync.py [COUNT] [CHANGES]

A client knows a folder of COUNT (10,000) messages (UIDVALIDITY, HIGHESTMODSEQ, its UIDs).
Another session then makes CHANGES (10) changes: half flag changes, half expunges. The client
comes back twice and the bytes the server sends and the wall time are measured for each:

- QRESYNC: ENABLE QRESYNC + SELECT INBOX (QRESYNC (uidvalidity modseq known-uids));
- full:    SELECT INBOX + FETCH 1:* (UID FLAGS), what a client without CONDSTORE does.

Each is run 5 times (the folder stays open through a keeper session, as on a busy server),
the median time is printed.

Then COMPRESS=DEFLATE over IMAPS: FETCH 1:* (ENVELOPE BODYSTRUCTURE) over the same folder,
bytes inflated versus compressed bytes received (inside TLS), and the time with and without.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, Raw, USERS  # noqa: E402
from bench_imap import fill  # noqa: E402
from imap_compress import ZClient  # noqa: E402

PW = USERS["alice"]


def login(port):
    c = Raw(port)
    c.cmd("l", f'LOGIN alice "{PW}"')
    return c


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    changes = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    srv = Server()
    try:
        fill(srv, count)
        srv.start()
        keeper = login(srv.port_plain)
        keeper.cmd("s", "EXAMINE INBOX")
        c = login(srv.port_plain)
        c.cmd("e", "ENABLE QRESYNC")
        out = c.cmd("s", "SELECT INBOX")
        uv = int(out.split(b"[UIDVALIDITY ")[1].split(b"]")[0])
        modseq = int(out.split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0])
        c.cmd("o", "LOGOUT")
        other = login(srv.port_plain)
        other.cmd("s", "SELECT INBOX")
        step = max(1, count // (changes + 1))
        n_flags = changes - changes // 2
        for k in range(n_flags):
            other.cmd("f", f"UID STORE {1 + k * step} +FLAGS.SILENT (\\Flagged)")
        doomed = ",".join(str(2 + k * step) for k in range(changes // 2))
        if doomed:
            other.cmd("d", f"UID STORE {doomed} +FLAGS.SILENT (\\Deleted)")
            other.cmd("x", "EXPUNGE")
        other.cmd("o", "LOGOUT")
        known = f"1:{count}"

        def qresync():
            cl = login(srv.port_plain)
            t = time.perf_counter()
            a = cl.cmd("e", "ENABLE QRESYNC")
            b = cl.cmd("s", f"SELECT INBOX (QRESYNC ({uv} {modseq} {known}))")
            dt = time.perf_counter() - t
            cl.cmd("o", "LOGOUT")
            cl.close()
            return len(a) + len(b), dt, b

        def full():
            cl = login(srv.port_plain)
            t = time.perf_counter()
            a = cl.cmd("s", "SELECT INBOX")
            b = cl.cmd("f", "FETCH 1:* (UID FLAGS)")
            dt = time.perf_counter() - t
            cl.cmd("o", "LOGOUT")
            cl.close()
            return len(a) + len(b), dt, b

        for name, fn in (("QRESYNC SELECT", qresync), ("SELECT + FETCH 1:* (UID FLAGS)", full)):
            runs = [fn() for _ in range(5)]
            size = runs[0][0]
            ms = statistics.median(r[1] for r in runs) * 1000
            print(f"{name}: {size} bytes from the server, {ms:.2f} ms (median of 5), "
                  f"{count} messages, {changes} changes")
            if fn is qresync:
                print("  " + runs[0][2].decode().replace("\r\n", "\n  ")[:600])
        for compress in (False, True):
            z = ZClient(srv.port_tls, srv.tls_context())
            z.cmd("l", f'LOGIN alice "{PW}"')
            if compress:
                z.send(b"c COMPRESS DEFLATE\r\n")
                z.line()
                z.start()
            z.cmd("s", "EXAMINE INBOX")
            z.cmd("w", "FETCH 1:* (ENVELOPE BODYSTRUCTURE)")  # parsed and cached
            before = z.wire_in
            t = time.perf_counter()
            out = z.cmd("e", "FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
            dt = (time.perf_counter() - t) * 1000
            wire = z.wire_in - before
            z.cmd("o", "LOGOUT")
            z.s.close()
            if compress:
                print(f"COMPRESS=DEFLATE over IMAPS, FETCH 1:* (ENVELOPE BODYSTRUCTURE): "
                      f"{len(out)} bytes, {wire} compressed (ratio {len(out) / wire:.2f}:1), "
                      f"{dt:.1f} ms")
            else:
                print(f"uncompressed over IMAPS, FETCH 1:* (ENVELOPE BODYSTRUCTURE): "
                      f"{len(out)} bytes, {dt:.1f} ms")
        keeper.cmd("o", "LOGOUT")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
