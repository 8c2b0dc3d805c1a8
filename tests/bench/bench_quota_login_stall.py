"""Loop stall when a user with a big mailbox logs in and APPENDs at once, before the background
quota count has ended (never run by ctest; prints figures):

    MK_BINARY=build-rel/mailkeep python3 tests/bench/bench_quota_login_stall.py FOLDERS PER_FOLDER

The user has FOLDERS Maildir folders of PER_FOLDER small messages and a quota; another user's
connection sends NOOP after NOOP meanwhile: the slowest NOOP is how long the loop was held."""
import os, sys, time, threading
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from imap_harness import Server, Raw, USERS
nf, per = int(sys.argv[1]), int(sys.argv[2])
srv = Server(extra_server="quota_storage = 10G\n")
own = srv.owner or (os.getuid(), os.getgid())
def mk(d, n):
    for sub in ("", "tmp", "new", "cur"):
        os.makedirs(os.path.join(d, sub), exist_ok=True); os.chown(os.path.join(d, sub), *own)
    for i in range(n):
        p = os.path.join(d, "cur", f"{1700000000+i}.M{i}P1.x:2,S")
        with open(p, "wb") as f: f.write(b"Subject: x\r\n\r\nbody\r\n")
        os.chown(p, *own)
try:
    md = srv.maildir("alice"); mk(md, 10)
    for f in range(nf): mk(os.path.join(md, f".F{f}"), per)
    mk(srv.maildir("bob"), 1)
    srv.start()
    b = Raw(srv.port_plain); b.cmd("l", f'LOGIN bob "{USERS["bob"]}"')
    a = Raw(srv.port_plain, timeout=600)
    msg = b"Subject: hi\r\n\r\nhello\r\n"
    stop = threading.Event(); worst = [0.0, 0]
    def pinger():
        while not stop.is_set():
            t0 = time.monotonic(); b.cmd("n", "NOOP"); dt = time.monotonic() - t0
            worst[0] = max(worst[0], dt); worst[1] += 1
    th = threading.Thread(target=pinger, daemon=True); th.start()
    t0 = time.monotonic()
    a.send(f"l LOGIN alice {USERS['alice']}\r\n".encode() + b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    out = a.until_tagged("a"); t1 = time.monotonic()
    stop.set(); th.join()
    print(f"{nf} folders x {per}: LOGIN+APPEND {1000*(t1-t0):.0f} ms ({out[-40:]!r}); NOOPs {worst[1]}, worst {1000*worst[0]:.1f} ms")
    print(a.cmd("q", "GETQUOTAROOT INBOX"))
finally:
    srv.stop(); srv.cleanup()
