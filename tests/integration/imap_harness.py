"""Shared set-up for the IMAP integration tests: the real mailkeep binary (MK_BINARY) on
127.0.0.1 with free ports, a temporary Maildir store, a self-signed certificate for
127.0.0.1, and PAM through pam_matrix with the service file in the test's own directory
(`pam_confdir`), so no test needs root or a system user.

Listeners: `imap` (tls = starttls), `imaps` (implicit TLS) and `imapplain` (tls = none).
Waiting is always on an event with a deadline, never a sleep.
"""
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading

from mk_testlib import (  # noqa: F401 (re-exported to the tests)
    FORMAT_CONFIG,
    MBOX,
    deliver_mbox,
    mbox_state_dir,
    BIN,
    PAM_MATRIX,
    free_port,
    make_cert,
    prepare_for_nobody,
    write_pam_matrix)

SERVICE = "mailkeep-imaptest"
USERS = {"alice": "secret", "bob": "hunter 2", "carol": "p\"w\\3"}
_names = itertools.count(1)


class Server:
    def __init__(self, extra_server=""):
        if not BIN or not os.path.exists(BIN):
            raise RuntimeError("MK_BINARY does not name the mailkeep binary")
        self.dir = tempfile.mkdtemp(prefix="mk-imap-it-")
        self.mail = os.path.join(self.dir, "mail")
        os.makedirs(self.mail, exist_ok=True)
        self.owner, mail_user = prepare_for_nobody(self.dir, self.mail)
        self.cert, self.key = make_cert(self.dir)
        self.pamdir = write_pam_matrix(self.dir, SERVICE, USERS)
        self.port = free_port()
        self.port_tls = free_port()
        self.port_plain = free_port()
        self.conf = os.path.join(self.dir, "mailkeep.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[server]
mail_root = {self.mail}/%u
{FORMAT_CONFIG}log_level = debug
{mail_user}
pam_service = {SERVICE}
pam_confdir = {self.pamdir}
auth_fail_delay_ms = 0
auth_fail_delay_max_ms = 0
{extra_server}
[tls]
cert = {self.cert}
key = {self.key}

[listener imap]
protocol = imap
address = 127.0.0.1
port = {self.port}
tls = starttls

[listener imaps]
protocol = imap
address = 127.0.0.1
port = {self.port_tls}
tls = implicit

[listener imapplain]
protocol = imap
address = 127.0.0.1
port = {self.port_plain}
tls = none
""")
        self.proc = None
        self.log = []
        self.started = threading.Event()
        self.cond = threading.Condition()

    def maildir(self, user="alice"):
        return os.path.join(self.mail, user)

    def state_dir(self, user="alice"):
        """Where the store keeps INBOX's own files (the Maildir itself, or mbox's state)."""
        return mbox_state_dir(self.maildir(user)) if MBOX else self.maildir(user)

    def deliver(self, data, user="alice"):
        """Put a message into new/ as an MTA would (tmp, then rename); with mbox, append it
        to the user's inbox file under dotlock + fcntl."""
        if MBOX:
            deliver_mbox(self.maildir(user), data, self.owner)
            return None
        md = self.maildir(user)
        for d in [md] + [os.path.join(md, sub) for sub in ("tmp", "new", "cur")]:
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
                if self.owner:
                    os.chown(d, *self.owner)
        n = next(_names)
        name = f"{1700000000 + n}.M{n}P{os.getpid()}.test"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if self.owner:
            os.chown(tmp, *self.owner)
        os.rename(tmp, os.path.join(md, "new", name))
        return name

    def start(self):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "detect_leaks=1") + \
            ":verify_asan_link_order=0"
        self.proc = subprocess.Popen([BIN, "-f", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._drain, daemon=True).start()
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

    def log_text(self):
        return "".join(self.log)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tls_context(self):
        return ssl.create_default_context(cafile=self.cert)


class Raw:
    """A raw IMAP client: exact bytes in and out, every read with a deadline."""

    def __init__(self, port, timeout=30, tls_ctx=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s = tls_ctx.wrap_socket(s, server_hostname="127.0.0.1") if tls_ctx else s
        self.buf = bytearray()
        self.pos = 0
        self.greeting = self.line()

    def send(self, data):
        self.s.sendall(data)

    # Input is kept in a bytearray read from position pos (no copy per line).
    def _fill(self):
        chunk = self.s.recv(1 << 18)
        if not chunk:
            raise EOFError("connection closed; had %r" % bytes(self.buf[self.pos:self.pos + 200]))
        if self.pos > (1 << 20):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def _take(self, n):
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def line(self):
        start = self.pos
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                return self._take(i + 2 - self.pos)
            # where to look again, relative to pos: _fill may drop the consumed bytes
            rel = max(self.pos, len(self.buf) - 1) - self.pos
            self._fill()
            start = self.pos + rel

    def until_tagged(self, tag):
        """Every line up to and including the tagged reply for TAG (literals included)."""
        parts = []
        prefix = tag.encode() + b" "
        while True:
            ln = self.line()
            parts.append(ln)
            if ln.endswith(b"}\r\n"):
                n = int(ln[ln.rindex(b"{") + 1:-3].rstrip(b"+"))
                while len(self.buf) - self.pos < n:
                    self._fill()
                parts.append(self._take(n))
                continue
            if ln.startswith(prefix):
                return b"".join(parts)

    def cmd(self, tag, line):
        self.send(f"{tag} {line}\r\n".encode())
        return self.until_tagged(tag)

    def eof(self):
        try:
            while True:
                chunk = self.s.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.s.close()
