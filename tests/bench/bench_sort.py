"""SORT and THREAD figures against the real binary, and Debian's Dovecot side by side (never run
by ctest; prints figures):

    MK_BINARY=build-rel/mailkeep python3 tests/bench/bench_sort.py [COUNT] [--dovecot]

COUNT (10,000) messages in threads, generated deterministically: replies to a random
earlier message of the last 300 (References: the parent's last 9 + the parent,
In-Reply-To), "Re:"/"Fwd:"/"[list]" prefixes, RFC 2047 subjects and names, Date fields in
several time zones (1% without one), 2% replies to messages not in the folder.

For each command -- `SORT (DATE) UTF-8 ALL`, `SORT (SUBJECT) UTF-8 ALL`,
`THREAD REFERENCES UTF-8 ALL` -- each server starts on a fresh copy of the Maildir (nothing
parsed, cached or indexed; the files themselves are in the page cache, since the copy was
just written), SELECTs INBOX (timed apart), runs the command once ("cold": it parses or
indexes what it needs) and again ("warm"). The two servers' answers are compared. Dovecot
runs its mail processes as uid/gid `mail` (8), mailkeep as nobody when started as root.
"""
import os
import random
import shutil
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, Raw, USERS  # noqa: E402
from bench_imap import dovecot_start  # noqa: E402

COMMANDS = ["SORT (DATE) UTF-8 ALL", "SORT (SUBJECT) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL"]
NAMES = ["Alice Archer", "Bob Baker", "Carol Chen", "Dave Dunn", "=?utf-8?q?=C3=89mile_Zola?=",
         "Frank Fox", "=?iso-8859-1?q?J=FCrgen_Klein?=", "Heidi Hall", "Ivan Ito", "Judy Jones"]
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
ZONES = [("+0000", 0), ("+0100", 3600), ("-0500", -18000), ("+0530", 19800), ("-0800", -28800)]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def rfc5322_date(t, zone, off):
    tm = time.gmtime(t + off)
    return (f"{DAYS[tm.tm_wday]}, {tm.tm_mday} {MONTHS[tm.tm_mon - 1]} {tm.tm_year} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {zone}")


def generate(count, seed=1):
    """[(file name, bytes)] of COUNT messages."""
    rnd = random.Random(seed)
    msgs, out = [], []
    t0 = 1767225600  # 2026-01-01
    for i in range(count):
        mid = f"<{i}.bench@example.org>"
        refs, irt = [], None
        if i > 0 and rnd.random() < 0.7:
            p = msgs[rnd.randrange(max(0, i - 300), i)]
            refs = p["refs"][-9:] + [p["id"]]
            irt = p["id"]
            base = p["base"]
            subject = rnd.choice(["Re: ", "Re: ", "RE: ", "Fwd: ", "[list] Re: ", "Re[2]: "]) + base
        else:
            base = (f"=?utf-8?q?caf=C3=A9_{i}?=" if rnd.random() < 0.05
                    else f"topic {i} {rnd.choice(WORDS)} {rnd.choice(WORDS)}")
            subject = base if rnd.random() < 0.9 else base + " (fwd)"
            if rnd.random() < 0.03:
                refs = [f"<gone.{i}@example.org>"]
                irt = refs[0]
        msgs.append({"id": mid, "refs": refs, "base": base})
        who = rnd.choice(NAMES)
        zone, off = rnd.choice(ZONES)
        t = t0 + i * 60 + rnd.randrange(-3 * 3600, 3 * 3600)
        head = [f"From: {who} <{who.split()[0].lower().strip('=?')}@example.org>",
                f"To: {rnd.choice(NAMES)} <list@example.org>",
                f"Subject: {subject}"]
        if rnd.random() >= 0.01:
            head.append(f"Date: {rfc5322_date(t, zone, off)}")
        head.append(f"Message-ID: {mid}")
        if irt:
            head.append(f"In-Reply-To: {irt}")
        if refs:
            head.append("References: " + "\r\n ".join(refs))
        head += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"]
        body = "\r\n".join(" ".join(rnd.choice(WORDS) for _ in range(12))
                           for _ in range(rnd.randrange(5, 40)))
        data = ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()
        out.append((f"{1700000000 + i}.M{i}P1.bench:2,S", data, t))
    return out


def write_maildir(md, msgs, owner):
    for sub in ("", "tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
        os.chown(os.path.join(md, sub), *owner)
    for name, data, t in msgs:
        p = os.path.join(md, "cur", name)
        with open(p, "wb") as f:
            f.write(data)
        os.utime(p, (t, t))
        os.chown(p, *owner)


def timed(r, tag, line):
    t = time.monotonic()
    out = r.cmd(tag, line)
    dt = time.monotonic() - t
    last = out.splitlines()[-1]
    if not last.startswith(f"{tag} OK".encode()):
        raise AssertionError(out[-300:])
    return dt, out[:-len(last) - 2]


def run(name, port, command):
    r = Raw(port, timeout=600)
    out = r.cmd("l", f"LOGIN alice {USERS['alice']}")
    if b"l OK" not in out:
        raise AssertionError(out)
    sel, _ = timed(r, "s", "SELECT INBOX")
    cold, answer = timed(r, "c", command)
    warm, again = timed(r, "w", command)
    r.cmd("o", "LOGOUT")
    r.close()
    if again != answer:
        raise AssertionError(f"{name}: {command}: cold and warm answers differ")
    print(f"{name:9s} {command:30s} SELECT {sel * 1000:7.0f} ms   cold {cold * 1000:7.0f} ms   "
          f"warm {warm * 1000:7.0f} ms", flush=True)
    return answer


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 10000
    dovecot = "--dovecot" in sys.argv and shutil.which("dovecot")
    msgs = generate(count)
    print(f"messages: {count}, {sum(len(m[1]) for m in msgs) / 1e6:.1f} MB", flush=True)
    for command in COMMANDS:
        srv = Server()
        try:
            write_maildir(srv.maildir("alice"), msgs, srv.owner or (os.getuid(), os.getgid()))
            srv.start()
            ours = run("mailkeep", srv.port_plain, command)
        finally:
            srv.stop()
            srv.cleanup()
        if not dovecot:
            continue
        d = tempfile.mkdtemp(prefix="mk-bench-sort-dc-")
        try:
            os.chmod(d, 0o755)
            owner = (8, 8) if os.getuid() == 0 else (os.getuid(), os.getgid())
            mail = os.path.join(d, "mail")
            os.makedirs(mail)
            os.chown(mail, *owner)
            write_maildir(os.path.join(mail, "alice"), msgs, owner)
            proc, port = dovecot_start(types.SimpleNamespace(dir=d, mail=mail, owner=owner))
            try:
                theirs = run("dovecot", port, command)
            finally:
                proc.terminate()
                proc.wait(30)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        print(f"          answers {'identical' if ours == theirs else 'DIFFER'}"
              f" ({len(ours)} bytes)", flush=True)
        if ours != theirs:
            at = next(i for i in range(min(len(ours), len(theirs)) + 1)
                      if i == min(len(ours), len(theirs)) or ours[i] != theirs[i])
            print(f"          first difference at byte {at}:\n          mailkeep "
                  f"{ours[max(0, at - 60):at + 60]!r}\n          dovecot  "
                  f"{theirs[max(0, at - 60):at + 60]!r}", flush=True)


if __name__ == "__main__":
    main()
