"""Shared set-up for the POP3 integration tests: the real mailkeep binary (MK_BINARY) on
127.0.0.1 with free ports, a temporary Maildir store, a self-signed certificate for
127.0.0.1, and PAM through pam_matrix with the service file in the test's own directory
(`pam_confdir`), so no test needs root or a system user.

Listeners: `pop3` (tls = starttls, STLS offered), `pop3s` (implicit TLS), `pop3plain`
(tls = none), `pop3idle` (tls = none, idle_timeout = 1) and `imap` (tls = none) for the tests where an IMAP client shares the mailbox. Waiting is always on an event with a deadline, never a sleep.
"""
import hashlib
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from mk_testlib import (  # noqa: F401 (re-exported to the tests)
    FORMAT_CONFIG,
    MBOX,
    deliver_mbox,
    mbox_state_dir,
    BIN,
    PAM_MATRIX,
    as_delivered,
    crlf as _crlf,
    free_port,
    make_cert,
    prepare_for_nobody,
    write_pam_matrix)


def crlf(data):
    """The bytes the store serves for DATA delivered by the harness's MTA (Server.deliver):
    every bare LF counted as CRLF, after what an mbox MTA changes (mk_testlib.as_delivered)."""
    return _crlf(as_delivered(data))


SERVICE = "mailkeep-pop3test"
_names = itertools.count(1)
USERS = {"alice": "secret", "bob": "hunter 2", "carol": "pw3", "dave": "pw4"}


def tls_context(cafile):
    return ssl.create_default_context(cafile=cafile)


class Server:
    """One mailkeep process. extra_server: more `key = value` lines for [server]."""

    def __init__(self, extra_server="", keep_dir=None, log_level="debug"):
        if not BIN or not os.path.exists(BIN):
            raise RuntimeError("MK_BINARY does not name the mailkeep binary")
        self.dir = keep_dir or tempfile.mkdtemp(prefix="mk-pop3-it-")
        self.mail = os.path.join(self.dir, "mail")
        os.makedirs(self.mail, exist_ok=True)
        # Started as root (CI), the daemon drops to mail_user: use nobody, and let it own
        # the store.
        self.owner, mail_user = prepare_for_nobody(self.dir, self.mail)
        self.cert, self.key = make_cert(self.dir) if not keep_dir else (
            os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem"))
        self.pamdir = write_pam_matrix(self.dir, SERVICE, USERS)
        self.port = free_port()
        self.port_tls = free_port()
        self.port_plain = free_port()
        self.port_imap = free_port()
        self.port_idle = free_port()
        self.conf = os.path.join(self.dir, "mailkeep.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[server]
mail_root = {self.mail}/%u
{FORMAT_CONFIG}log_level = {log_level}
{mail_user}
pam_service = {SERVICE}
pam_confdir = {self.pamdir}
auth_fail_delay_ms = 0
auth_fail_delay_max_ms = 0
{extra_server}
[tls]
cert = {self.cert}
key = {self.key}

[listener pop3]
protocol = pop3
address = 127.0.0.1
port = {self.port}
tls = starttls

[listener pop3s]
protocol = pop3
address = 127.0.0.1
port = {self.port_tls}
tls = implicit

[listener pop3plain]
protocol = pop3
address = 127.0.0.1
port = {self.port_plain}
tls = none

[listener pop3idle]
protocol = pop3
address = 127.0.0.1
port = {self.port_idle}
tls = none
idle_timeout = 1

[listener imap]
protocol = imap
address = 127.0.0.1
port = {self.port_imap}
tls = none
""")
        self.proc = None
        self.drainer = None
        self.log = []
        self.started = threading.Event()
        self.cond = threading.Condition()

    def maildir(self, user="alice"):
        return os.path.join(self.mail, user)

    def state_dir(self, user="alice"):
        """Where the store keeps INBOX's own files (the Maildir itself, or mbox's state)."""
        return mbox_state_dir(self.maildir(user)) if MBOX else self.maildir(user)

    def deliver(self, data, user="alice", name=None):
        """Put a message into new/ as an MTA would (tmp, then rename); with mbox, append it
        to the user's inbox file under dotlock + fcntl."""
        if MBOX:
            deliver_mbox(self.maildir(user), data, self.owner)
            return None
        md = self.maildir(user)
        for d in [md] + [os.path.join(md, sub) for sub in ("tmp", "new", "cur")]:
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
                self._own(d)
        n = next(_names)
        name = name or f"{1700000000 + n}.M{n}P{os.getpid()}.test"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._own(tmp)
        os.rename(tmp, os.path.join(md, "new", name))
        return name

    def _own(self, path):
        if self.owner:
            os.chown(path, *self.owner)

    @staticmethod
    def _mbox_files(path):
        import mbox_tools
        out = []
        for hd, body in mbox_tools.messages(path):
            fl = mbox_tools.flags_of(hd)
            letters = "".join(ch for ch, f in (("D", "\\Draft"), ("F", "\\Flagged"),
                                               ("R", "\\Answered"), ("S", "\\Seen"),
                                               ("T", "\\Deleted")) if f in fl)
            if hd.get("x-keywords", "").strip():
                letters += "a"
            key = hashlib.sha1(hd.get("subject", "").encode() + body).hexdigest()[:16]
            out.append(f"inbox#{key}:2,{letters}")
        return out

    def message_files(self, user="alice", expect=None):
        """The messages on disk: Maildir file paths; with mbox, one "inbox#N:2,FLAGS" a
        message of the inbox file (FLAGS: the Maildir letters of its Status/X-Status, plus
        "a" when it carries a keyword; N: a hash of its Subject and body, which no state
        header changes), so tests count and compare them alike. EXPECT (a count, or a
        predicate on the list): with mbox, wait (bounded, on inotify) until the file shows
        it, since the file follows the store's state soon after a change."""
        md = self.maildir(user)
        if MBOX:
            import mbox_tools
            path = mbox_tools.mbox_path(md)
            if expect is not None:
                test = expect if callable(expect) else (lambda fs: len(fs) == expect)
                mbox_tools.wait_until(path, lambda: test(self._mbox_files(path)))
            return self._mbox_files(path)
        out = []
        for sub in ("new", "cur"):
            p = os.path.join(md, sub)
            if os.path.isdir(p):
                out += [os.path.join(p, n) for n in os.listdir(p)]
        return sorted(out)

    def start(self):
        env = dict(os.environ)
        # A small quarantine keeps the RSS figures of a sanitizer build meaningful (freed
        # output chunks would otherwise stay mapped, 256 MB by default).
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "detect_leaks=1") + \
            ":verify_asan_link_order=0:quarantine_size_mb=8"
        self.proc = subprocess.Popen([BIN, "-f", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()
        if not self.started.wait(30):
            self.stop()
            raise RuntimeError("mailkeep did not start:\n" + "".join(self.log[-40:]))
        return self

    def _drain(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            with self.cond:
                self.log.append(line)
                self.cond.notify_all()
            if "event=started" in line:
                self.started.set()

    def wait_log(self, needle, count=1, timeout=30):
        """Wait until NEEDLE has appeared COUNT times in the server's log."""
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(needle in ln for ln in self.log) >= count,
                                    timeout)
        if not ok:
            raise AssertionError(f"log never showed {needle!r} x{count}:\n" +
                                 "".join(self.log[-40:]))

    def log_text(self):
        return "".join(self.log)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.drainer:
            self.drainer.join(30)
            self.drainer = None
            self.proc.stderr.close()
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Raw:
    """A raw POP3 client on a socket: exact bytes in and out, every read with a deadline."""

    def __init__(self, port, timeout=30):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(1 << 16)
        if not chunk:
            raise EOFError("connection closed; had %r" % self.buf[:200])
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def multiline(self):
        """The body of a multi-line response (after its status line), up to and including
        the terminating .CRLF, as raw wire bytes."""
        while True:
            if self.buf.startswith(b".\r\n"):
                i = 3
                break
            j = self.buf.find(b"\r\n.\r\n")
            if j >= 0:
                i = j + 5
                break
            self._fill()
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.line()

    def login(self, user="alice", password=None):
        password = password if password is not None else USERS[user]
        assert self.cmd(f"USER {user}").startswith(b"+OK"), "USER refused"
        r = self.cmd(f"PASS {password}")
        if not r.startswith(b"+OK"):
            raise AssertionError(r)
        return r

    def eof(self):
        """True when the server has closed (waits for it with the socket timeout)."""
        try:
            while True:
                chunk = self.s.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def unstuff(wire):
    """RFC 1939: a multi-line body on the wire back to the message's CRLF bytes."""
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    lines = body.split(b"\r\n")
    out = []
    for ln in lines:
        out.append(ln[1:] if ln.startswith(b".") else ln)
    return b"\r\n".join(out)


