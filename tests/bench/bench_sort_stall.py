"""Loop stall during SORT/THREAD (never run by ctest; prints figures):

    MK_BINARY=build-rel/mailkeep python3 tests/bench/bench_sort_stall.py [COUNT] [COMMAND ...]

COUNT (10,000) messages from bench_sort.py's generator; connection 1 SELECTs INBOX and runs
each COMMAND (default THREAD REFERENCES UTF-8 ALL) three times (cold: nothing parsed yet,
then warm twice) while connection 2 sends NOOP after NOOP: the slowest NOOP is how long the
loop was held."""
import os, sys, time, threading
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from imap_harness import Server, Raw, USERS
import bench_sort

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
cmds = sys.argv[2:] or ["THREAD REFERENCES UTF-8 ALL"]
msgs = bench_sort.generate(count)
srv = Server()
try:
    bench_sort.write_maildir(srv.maildir("alice"), msgs, srv.owner or (os.getuid(), os.getgid()))
    srv.start()
    a = Raw(srv.port_plain, timeout=600); b = Raw(srv.port_plain, timeout=600)
    for c in (a, b):
        c.cmd("l", f"LOGIN alice {USERS['alice']}")
    t = time.monotonic(); a.cmd("s", "SELECT INBOX"); print(f"SELECT {1000*(time.monotonic()-t):.0f} ms")
    for round_ in ("cold", "warm", "warm2"):
        for cmd in cmds:
            done = threading.Event(); res = {}
            def run():
                t0 = time.monotonic(); out = a.cmd("c", cmd); res["t"] = time.monotonic() - t0; res["n"] = len(out); done.set()
            th = threading.Thread(target=run); th.start()
            worst = 0.0; n = 0
            while not done.is_set():
                t0 = time.monotonic(); b.cmd("n", "NOOP"); dt = time.monotonic() - t0
                worst = max(worst, dt); n += 1
            th.join()
            print(f"{round_:5s} {cmd:40s} {res['t']*1000:7.0f} ms, {res['n']} bytes; NOOPs {n}, worst NOOP {worst*1000:.1f} ms", flush=True)
finally:
    srv.stop(); srv.cleanup()
