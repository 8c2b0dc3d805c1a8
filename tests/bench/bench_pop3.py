"""POP3 figures against the real daemon (never run by ctest; see protocols/pop3/README.md):

  RETR throughput of 10,000 messages over plain TCP and over TLS (MB/s of message bytes),
  the server's RSS afterwards, and logins (USER/PASS/QUIT with the maildrop opened) per
  second; with --dovecot, the same client against Debian's Dovecot (dovecot-pop3d) on the
  same Maildir afterwards. (The RSS while serving a 50 MB message is measured by
  tests/integration/pop3_wire.py, test_50mb_streamed.)

    MK_BINARY=build/mailkeep python3 tests/bench/bench_pop3.py [--messages N] [--size BYTES]
        [--dovecot]
"""
import argparse
import os
import random
import shutil
import socket
import subprocess
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


def dovecot_start(srv):
    """Dovecot on the same Maildir, the same users and passwords (a passwd-file), the same
    certificate."""
    d = os.path.join(srv.dir, "dovecot")
    os.makedirs(os.path.join(d, "run"))
    passwd = os.path.join(d, "passwd")
    owner = srv.owner or (os.getuid(), os.getgid())
    with open(passwd, "w") as f:
        for u, p in h.USERS.items():
            f.write(f"{u}:{{PLAIN}}{p}:{owner[0]}:{owner[1]}::{srv.mail}/{u}\n")
    port, port_tls = h.free_port(), h.free_port()
    conf = os.path.join(d, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""protocols = pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{srv.cert}
ssl_key = <{srv.key}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{srv.mail}/%u
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {port_tls}
    ssl = yes
  }}
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Ready when the listener greets (bounded by a deadline).
    deadline = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            if s.makefile("rb").readline().startswith(b"+OK"):
                s.close()
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("dovecot did not start; see " + os.path.join(d, "dovecot.log"))
        time.sleep(0.05)
    return proc, port, port_tls


def run_all(name, port, port_tls, cafile, messages):
    ctx = h.tls_context(cafile)

    def plain():
        return socket.create_connection(("127.0.0.1", port))

    def tls():
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port_tls)),
                               server_hostname="127.0.0.1")

    for label, factory in (("plain", plain), ("TLS", tls)):
        nbytes, dt = retr_all(factory, messages)
        print(f"{name}: RETR {messages} messages over {label}: {nbytes / 1e6:.1f} MB in "
              f"{dt:.2f} s = {nbytes / 1e6 / dt:.1f} MB/s, {messages / dt:.0f} msg/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--size", type=int, default=8192, help="average message size")
    ap.add_argument("--login-seconds", type=float, default=5)
    ap.add_argument("--dovecot", action="store_true",
                    help="also run the same client against Debian's Dovecot")
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
        # The first pass also sets \\Seen on every message (durable renames, as
        # pop3_retr_sets_seen asks); later passes only read.
        nbytes, dt = retr_all(lambda: socket.create_connection(("127.0.0.1", srv.port_plain)),
                              a.messages)
        print(f"mailkeep: first RETR pass (sets \\Seen) over plain: {nbytes / 1e6 / dt:.1f} MB/s")
        run_all("mailkeep", srv.port_plain, srv.port_tls, srv.cert, a.messages)
        print(f"mailkeep: server RSS after the RETR runs: {srv.rss_kb() / 1024:.1f} MB")
        rate = logins(srv.port_plain, ["alice", "bob", "carol", "dave"], a.login_seconds)
        print(f"mailkeep: logins (USER/PASS + maildrop open + QUIT, 4 clients): {rate:.0f}/s")
        srv.stop()
        if a.dovecot and shutil.which("dovecot"):
            proc, port, port_tls = dovecot_start(srv)
            try:
                c = h.Raw(port)
                c.login()  # Dovecot builds its index on the first login
                c.cmd("QUIT")
                c.close()
                run_all("dovecot", port, port_tls, srv.cert, a.messages)
                rate = logins(port, ["alice", "bob", "carol", "dave"], a.login_seconds)
                print(f"dovecot: logins (USER/PASS + QUIT, 4 clients): {rate:.0f}/s")
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
