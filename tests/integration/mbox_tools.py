"""The programs that share an mbox with mailkeep, for the integration tests run with
`mail_format = mbox` (MK_MAIL_FORMAT=mbox): an MTA appending to the spool and a mutt
editing flags or deleting messages, both under the locks Debian's MTAs, procmail and mutt
take, in their order: first the dotlock FILE.lock (made with link(2) from a unique name and
holding our PID; a lock whose PID is dead on this host or that is older than 5 minutes is
stale and removed: liblockfile's rules), then a write fcntl lock on the whole file.

Waiting for a lock never sleeps: the dotlock's removal is waited for with inotify (via
ctypes), the fcntl lock with F_SETLKW under an interval timer; both bounded.

The MTA writes what exim and postfix write (mboxo): "From MAILER-DAEMON <asctime>", the
message with LF line ends and every line starting "From " quoted as ">From ", an empty line.
"""
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import select
import signal
import socket
import threading
import time

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000
STALE_SECONDS = 300

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_seq = iter(range(1, 1 << 62))


def mbox_path(user_root, folder="INBOX"):
    """The file of FOLDER in a user's mail directory (INBOX = the file inbox, "a.b" = a/b)."""
    if folder.upper() == "INBOX":
        return os.path.join(user_root, "inbox")
    return os.path.join(user_root, *folder.split("."))


def _dead(pid):
    """PID has exited (gone, or a zombie nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2][:2] == b" Z"
    except OSError:
        return False


def _stale(lock):
    """(stale, holder PID or 0): liblockfile's rules."""
    try:
        with open(lock, "rb") as f:
            data = f.read(32)
            age = time.time() - os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return True, 0
    if age > STALE_SECONDS:
        return True, 0
    m = re.match(rb"\s*(\d+)", data)
    if m:
        pid = int(m.group(1))
        return _dead(pid), pid
    return False, 0


def _wait_removed(lock, holder, deadline):
    """Wait (inotify, bounded) until LOCK is gone, its HOLDER has exited (a pidfd), or the
    deadline passes."""
    fd = _libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    pfd = None
    try:
        if _libc.inotify_add_watch(fd, os.path.dirname(lock).encode(),
                                   IN_DELETE | IN_MOVED_FROM) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        if holder:
            with contextlib.suppress(OSError):
                pfd = os.pidfd_open(holder)
        if os.path.exists(lock):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{lock} held")
            r, _, _ = select.select([fd] + ([pfd] if pfd is not None else []), [], [], left)
            if not r:
                raise TimeoutError(f"{lock} held")
    finally:
        os.close(fd)
        if pfd is not None:
            os.close(pfd)


def _dotlock(path, deadline):
    lock = path + ".lock"
    while True:
        tmp = f"{lock}.{socket.gethostname()}.{os.getpid()}.{next(_seq)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"%d\n" % os.getpid())
        os.close(fd)
        try:
            os.link(tmp, lock)
            got = True
        except FileExistsError:
            got = os.stat(tmp).st_nlink == 2
        finally:
            os.unlink(tmp)
        if got:
            return lock
        stale, holder = _stale(lock)
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            continue
        _wait_removed(lock, holder, deadline)


def _fcntl_lock(fd, deadline):
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("a contended fcntl lock is waited for in the main thread only")
    left = max(deadline - time.monotonic(), 0.001)
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("fcntl")))
    signal.setitimer(signal.ITIMER_REAL, left)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def locked(path, timeout=10.0, owner=None):
    """Hold PATH's dotlock and fcntl lock; yields the fd (O_RDWR; the file is created 0600,
    owned by OWNER (uid, gid) when given)."""
    deadline = time.monotonic() + timeout
    lock = _dotlock(path, deadline)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if owner:
                st = os.fstat(fd)
                if (st.st_uid, st.st_gid) != tuple(owner):
                    os.fchown(fd, *owner)
            _fcntl_lock(fd, deadline)
            yield fd
        finally:
            os.close(fd)  # drops the fcntl lock
    finally:
        os.unlink(lock)


def _ensure_dir(d, owner):
    if not os.path.isdir(d):
        _ensure_dir(os.path.dirname(d), owner)
        os.mkdir(d, 0o700)
        if owner:
            os.chown(d, *owner)


def mta_bytes(data, sender="MAILER-DAEMON", when=None):
    """DATA as the MTA appends it: From_ line, LF line ends, ">From " quoting, a final newline
    and the empty separator line."""
    body = data.replace(b"\r\n", b"\n")
    body = re.sub(rb"(?m)^From ", b">From ", body)
    if not body.endswith(b"\n"):
        body += b"\n"
    date = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(when))
    return b"From %s %s\n" % (sender.encode(), date.encode()) + body + b"\n"


def deliver(path, data, owner=None, timeout=10.0):
    """Append DATA to the mbox PATH as an MTA does (locks, O_APPEND-style write at the end,
    fsync)."""
    _ensure_dir(os.path.dirname(path), owner)
    out = mta_bytes(data)
    with locked(path, timeout, owner) as fd:
        size = os.fstat(fd).st_size
        # the LF before a From_ line is the separator (Dovecot's rule; the last message may
        # end without a LF of its own): only a file not ending in a LF needs one
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            out = b"\n" + out
        os.pwrite(fd, out, size)
        os.fsync(fd)


# A message starts at "From " at the start of the file, after an empty line, or after any
# LF when the line carries an asctime date (storage/README.md "mbox": the LF before a From_
# line is the separator).
_FROM = re.compile(rb"(?:\A|(?<=\n\n))From |(?<=\n)From \S*[ \t]+"
                   rb"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]?[0-9] [0-9]{2}:[0-9]{2}(?::[0-9]{2})? ")


def split(data):
    """The messages of an mbox as [(start, end)] byte ranges (From_ line included, the
    separator LF too)."""
    starts = [m.start() for m in _FROM.finditer(data)]
    return [(s, starts[i + 1] if i + 1 < len(starts) else len(data))
            for i, s in enumerate(starts)]


def parse(msg):
    """(header dict lower-case name -> value, body bytes) of one message's bytes (From_
    line included)."""
    m = msg[msg.index(b"\n") + 1:] if b"\n" in msg else b""
    head, _, body = m.partition(b"\n\n")
    hdrs = {}
    for ln in head.split(b"\n"):
        if b":" in ln and not ln[:1].isspace():
            k, v = ln.split(b":", 1)
            hdrs.setdefault(k.strip().lower().decode(), v.strip().decode("latin-1"))
    return hdrs, body


def messages(path):
    """[(header dict, body bytes)] of every message in PATH (read without locks: for checks
    that wait until the file agrees)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [parse(data[s:e]) for s, e in split(data)]


def rewrite(path, edit, owner=None, timeout=10.0):
    """mutt's write-back: under the locks, EDIT(list of message bytes) -> new list, or None
    to leave the file alone; the file is rewritten in place from the first changed byte,
    truncated, fsynced. Whatever EDIT decides from is read under the same hold of the locks
    (mutt re-reads a file that changed before it writes): a message chosen by its place is
    the one edited, whatever the server wrote into the file before."""
    with locked(path, timeout, owner) as fd:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        msgs = [data[s:e] for s, e in split(data)]
        new = edit(msgs)
        if new is None:
            return
        new = b"".join(new)
        first = 0
        n = min(len(data), len(new))
        while first < n and data[first] == new[first]:
            first += 1
        if first < len(new):
            os.pwrite(fd, new[first:], first)
        os.ftruncate(fd, len(new))
        os.fsync(fd)


def _find(msgs, which):
    if isinstance(which, int):
        return which
    for i, m in enumerate(msgs):
        if re.search(rb"(?mi)^Message-ID:\s*" + re.escape(which.encode()) + rb"\s*$",
                     m.partition(b"\n\n")[0]):
            return i
    raise KeyError(which)


def with_status(msg, status, xstatus):
    """MSG (one message's bytes as split() gives them: From_ line and separator included) with
    its Status: and X-Status: replaced (an empty value drops the line), everything else kept:
    mutt's flag write. The new lines go right after the From_ line: a message that is all
    header and has no final newline of its own keeps its bytes (its last line runs into the
    separator)."""
    sep = b"\n" if msg.endswith(b"\n") else b""
    content = msg[:len(msg) - len(sep)]
    at = content.find(b"\n\n")
    head, rest = (content, b"") if at < 0 else (content[:at], content[at:])
    lines = [ln for ln in head.split(b"\n") if not re.match(rb"(?i)(Status|X-Status):", ln)]
    new = [b"Status: " + status.encode()] if status else []
    if xstatus:
        new.append(b"X-Status: " + xstatus.encode())
    lines[1:1] = new
    return b"\n".join(lines) + rest + sep


def set_status(path, which, status, xstatus, owner=None):
    """mutt's flag write for message WHICH (index, or Message-ID "<..>")."""
    def edit(msgs):
        i = _find(msgs, which)
        msgs[i] = with_status(msgs[i], status, xstatus)
        return msgs
    rewrite(path, edit, owner)


def remove(path, which, owner=None):
    """mutt deleting message WHICH (index or Message-ID) and syncing the mailbox."""
    def edit(msgs):
        del msgs[_find(msgs, which)]
        return msgs
    rewrite(path, edit, owner)


def flags_of(hdrs):
    """IMAP system flags from Status/X-Status (UW-IMAP's letters)."""
    st, xs = hdrs.get("status", ""), hdrs.get("x-status", "")
    out = set()
    if "R" in st:
        out.add("\\Seen")
    for ch, fl in (("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft"),
                   ("D", "\\Deleted")):
        if ch in xs:
            out.add(fl)
    return out


def status_of(flags):
    """(Status, X-Status) for a set of IMAP system flags, as mutt writes them."""
    st = ("R" if "\\Seen" in flags else "") + "O"
    xs = "".join(ch for ch, fl in (("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft"),
                                   ("D", "\\Deleted")) if fl in flags)
    return st, xs



def wait_until(path, pred, timeout=10.0):
    """mailkeep brings an mbox file up to date soon after a change (its own state is the
    commit point): wait until PRED() holds, looking again at every change in PATH's
    directory (inotify), at most TIMEOUT seconds. Returns the last PRED()."""
    fd = _libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        d = os.path.dirname(path)
        while not os.path.isdir(d):
            d = os.path.dirname(d)
        if _libc.inotify_add_watch(fd, d.encode(), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO |
                                   IN_MOVED_FROM | IN_CREATE | IN_DELETE) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        deadline = time.monotonic() + timeout
        while True:
            ok = pred()
            left = deadline - time.monotonic()
            if ok or left <= 0:
                return ok
            r, _, _ = select.select([fd], [], [], left)
            if r:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 65536)
    finally:
        os.close(fd)
