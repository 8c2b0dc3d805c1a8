"""POP3 figures against the real daemon (never run by ctest; see protocols/pop3/README.md):

  RETR throughput of 10,000 messages over plain TCP and over TLS (MB/s of message bytes),
  server RSS while serving a 50 MB message, and logins (USER/PASS/QUIT with the maildrop
  opened) per second.

    MK_BINARY=build/mailkeep python3 tests/bench/bench_pop3.py [--messages N] [--size BYTES]
"""
import argparse
import os
import random
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import pop3_harness as h  # noqa: E402


def make_message(i, size, rnd):
    head = (f"From: sender{i}@example.com\r\nTo: alice@example.com\r\n"
            f"Subject: message {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n").encode()
    line = b"".join(rnd.choice([b"lorem ", b"ipsum ", b"dolor ", b"sit ", b"amet "])
                    for _ in range(12)) + b"\n"
    body = bytearray()
    while len(head) + len(body) < size:
        body += line
    return head + bytes(body)


def retr_all(sock_factory, count, batch=64):
    """Log in, RETR every message pipelined in batches; returns (bytes, seconds)."""
    s = sock_factory()
    f = s.makefile("rb", buffering=1 << 20)
    f.readline()
    s.sendall(b"USER alice\r\nPASS secret\r\n")
    f.readline()
    assert f.readline().startswith(b"+OK")
    total = 0
    t0 = time.perf_counter()
    n = 1
    while n <= count:
        k = min(batch, count - n + 1)
        s.sendall(b"".join(b"RETR %d\r\n" % i for i in range(n, n + k)))
        for _ in range(k):
            status = f.readline()
            assert status.startswith(b"+OK"), status
            while True:
                ln = f.readline()
                if ln == b".\r\n":
                    break
                total += len(ln)
        n += k
    dt = time.perf_counter() - t0
    s.sendall(b"QUIT\r\n")
    f.readline()
    s.close()
    return total, dt


def logins(port, users, seconds):
    done = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(user):
        while time.perf_counter() < stop:
            c = h.Raw(port)
            c.login(user)
            assert c.cmd("QUIT").startswith(b"+OK")
            c.eof()
            c.close()
            with lock:
                done[0] += 1

    ts = [threading.Thread(target=worker, args=(u,)) for u in users]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return done[0] / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--size", type=int, default=8192, help="average message size")
    ap.add_argument("--login-seconds", type=float, default=5)
    a = ap.parse_args()
    srv = h.Server(extra_server="auth_workers = 8", log_level="info")
    rnd = random.Random(1)
    for i in range(a.messages):
        srv.deliver(make_message(i, rnd.randint(a.size // 2, a.size * 3 // 2), rnd))
    for u in ("bob", "carol", "dave"):
        srv.deliver(make_message(0, 2000, rnd), user=u)
    srv.start()
    try:
        # Warm-up: the first login numbers the new messages.
        c = h.Raw(srv.port_plain)
        c.login()
        c.cmd("QUIT")
        c.eof()
        c.close()
        ctx = h.tls_context(srv.cert)

        def plain():
            return socket.create_connection(("127.0.0.1", srv.port_plain))

        def tls():
            return ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port_tls)),
                                   server_hostname="127.0.0.1")

        # The first pass also sets \Seen on every message (a durable rename each, as
        # pop3_retr_sets_seen asks); later passes only read.
        for name, factory in (("plain, first (sets \\Seen)", plain), ("plain", plain),
                              ("TLS", tls)):
            nbytes, dt = retr_all(factory, a.messages)
            print(f"RETR {a.messages} messages over {name}: {nbytes / 1e6:.1f} MB in {dt:.2f} s"
                  f" = {nbytes / 1e6 / dt:.1f} MB/s, {a.messages / dt:.0f} msg/s")
        print(f"server RSS after the RETR runs: {srv.rss_kb() / 1024:.1f} MB")
        rate = logins(srv.port_plain, ["alice", "bob", "carol", "dave"], a.login_seconds)
        print(f"logins (USER/PASS + maildrop open + QUIT, 4 clients): {rate:.0f}/s")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
