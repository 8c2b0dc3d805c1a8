"""packaging/cert-deploy, the certbot / acme.sh deploy hook, against the real daemon: it
installs a renewed pair where mailkeep reads it (key 0640 to the group the daemon runs as),
checks it with `mailkeep --check-config`, and reloads; after the reload new connections get the
new certificate while an open session goes on. A pair that does not pass the check is refused:
the previous pair stays and the daemon is not signalled. Invoked the three ways the man page
documents: by hand (FULLCHAIN KEY), as certbot does (RENEWED_LINEAGE) and as acme.sh does
(CERT_FULLCHAIN_PATH, CERT_KEY_PATH)."""
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from mk_testlib import free_port

SRC = os.environ["MK_SOURCE_DIR"]
BIN = os.environ["MK_BINARY"]
HOOK = os.path.join(SRC, "packaging", "cert-deploy")
TIMEOUT = 20.0



def make_pair(d, key=None):
    """A self-signed certificate for 127.0.0.1 in D (fullchain.pem, privkey.pem), with a new key
    or with KEY's."""
    os.makedirs(d, exist_ok=True)
    chain, newkey = os.path.join(d, "fullchain.pem"), os.path.join(d, "privkey.pem")
    if key:
        shutil.copy(key, newkey)
    else:
        subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile",
                        newkey], check=True, capture_output=True, timeout=60)
    tmpl = os.path.join(d, "cert.tmpl")
    with open(tmpl, "w") as f:
        f.write('cn = "%s"\nip_address = "127.0.0.1"\nexpiration_days = 2\n'
                'tls_www_server\nsigning_key\nencryption_key\n' % os.path.basename(d))
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", newkey, "--template",
                    tmpl, "--outfile", chain], check=True, capture_output=True, timeout=60)
    return chain, newkey


def der(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


class Log:
    """The daemon's stderr, collected by a thread; wait() blocks on a condition, not a sleep."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def count(self, pattern):
        with self.cond:
            return sum(1 for l in self.lines if re.search(pattern, l))

    def wait(self, pattern, n=1):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while sum(1 for l in self.lines if re.search(pattern, l)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %d x %r in the log:\n%s"
                                         % (n, pattern, "\n".join(self.lines[-30:])))
                self.cond.wait(left)


class Pop3s:
    def __init__(self, port):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed: the test compares the certificate itself
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock = ctx.wrap_socket(raw)
        self.file = self.sock.makefile("rb")
        self.cert = self.sock.getpeercert(binary_form=True)
        self.greeting = self.file.readline()

    def command(self, line, multiline=False):
        self.sock.sendall(line.encode() + b"\r\n")
        first = self.file.readline()
        lines = [first]
        if multiline and first.startswith(b"+OK"):
            while lines[-1] != b".\r\n":
                lines.append(self.file.readline())
                if not lines[-1]:
                    break
        return lines

    def close(self):
        self.file.close()
        self.sock.close()


class CertDeploy(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mk-certdeploy-")
        os.chmod(self.dir, 0o755)
        self.tls = os.path.join(self.dir, "tls")
        self.conf = os.path.join(self.dir, "mailkeep.conf")
        self.port = free_port()
        mail = os.path.join(self.dir, "mail")
        os.makedirs(mail)
        # Started as root, the daemon drops to nobody and re-reads the key on reload as nobody:
        # the hook gives it to nobody's group, as it gives it to mailkeep's in production.
        mail_user = ""
        self.group = grp.getgrgid(os.getegid()).gr_name
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(mail, pw.pw_uid, pw.pw_gid)
            mail_user = "mail_user = nobody\n"
            self.group = grp.getgrgid(pw.pw_gid).gr_name
        with open(self.conf, "w") as f:
            f.write("[server]\nmail_root = %s/%%u\n%s\n[tls]\ncert = %s/fullchain.pem\n"
                    "key = %s/privkey.pem\n\n[listener pop3s]\nprotocol = pop3\n"
                    "address = 127.0.0.1\nport = %d\ntls = implicit\n"
                    % (mail, mail_user, self.tls, self.tls, self.port))
        self.proc = None

    def tearDown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
        if self.proc:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def hook(self, args=(), **env):
        e = dict(os.environ, MAILKEEP_TLS_DIR=self.tls, MAILKEEP_GROUP=self.group,
                 MAILKEEP_BIN=BIN, MAILKEEP_CONF=self.conf,
                 MAILKEEP_RELOAD="kill -HUP %d" % self.proc.pid if self.proc else "true")
        for k in ("RENEWED_LINEAGE", "CERT_FULLCHAIN_PATH", "CERT_KEY_PATH"):
            e.pop(k, None)
        e.update(env)
        return subprocess.run([HOOK] + list(args), capture_output=True, text=True, env=e,
                              timeout=120)

    def assert_installed(self, chain, key):
        self.assertEqual(read_file(os.path.join(self.tls, "fullchain.pem")), read_file(chain))
        self.assertEqual(read_file(os.path.join(self.tls, "privkey.pem")), read_file(key))
        st = os.stat(os.path.join(self.tls, "privkey.pem"))
        self.assertEqual((st.st_mode & 0o777, grp.getgrgid(st.st_gid).gr_name),
                         (0o640, self.group))
        self.assertEqual(os.stat(os.path.join(self.tls, "fullchain.pem")).st_mode & 0o777, 0o644)
        self.assertEqual(sorted(os.listdir(self.tls)), ["fullchain.pem", "privkey.pem"])

    def test_renewal_reaches_new_connections_and_spares_open_ones(self):
        a = make_pair(os.path.join(self.dir, "live-a"))
        b = make_pair(os.path.join(self.dir, "live-b"))
        c = make_pair(os.path.join(self.dir, "live-c"))
        empty = os.path.join(self.dir, "live-empty")
        os.makedirs(empty)

        # First install, by hand, before the daemon runs.
        r = self.hook(a)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_installed(*a)

        self.proc = subprocess.Popen([BIN, "-f", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        log = Log(self.proc.stderr)
        log.wait(r"event=started")
        old = Pop3s(self.port)
        self.assertEqual(old.cert, der(a[0]))
        self.assertTrue(old.greeting.startswith(b"+OK"), old.greeting)

        # certbot renews: RENEWED_LINEAGE names the live directory.
        r = self.hook(RENEWED_LINEAGE=os.path.dirname(b[0]))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_installed(*b)
        log.wait(r"event=reloaded")
        new = Pop3s(self.port)
        self.assertEqual(new.cert, der(b[0]))
        # The session opened before the reload goes on, on its old certificate.
        capa = old.command("CAPA", multiline=True)
        self.assertEqual(capa[0][:3], b"+OK")
        self.assertEqual(capa[-1], b".\r\n")
        self.assertEqual(old.command("QUIT")[0][:3], b"+OK")
        old.close()
        new.close()

        # A certificate with somebody else's key does not pass --check-config: refused, the
        # installed pair stays, nothing is signalled.
        r = self.hook((c[0], a[1]))
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not pass mailkeep --check-config; the previous one stays", r.stderr)
        self.assert_installed(*b)
        # A missing file and no input at all are refused before anything is touched.
        r = self.hook(RENEWED_LINEAGE=empty)
        self.assertEqual(r.returncode, 1)
        self.assertIn("fullchain.pem: missing or empty", r.stderr)
        r = self.hook()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: cert-deploy", r.stderr)
        self.assert_installed(*b)

        # acme.sh's --reloadcmd: CERT_FULLCHAIN_PATH and CERT_KEY_PATH.
        r = self.hook(CERT_FULLCHAIN_PATH=a[0], CERT_KEY_PATH=a[1])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_installed(*a)
        log.wait(r"event=reloaded", 2)
        third = Pop3s(self.port)
        self.assertEqual(third.cert, der(a[0]))
        third.close()

        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=TIMEOUT), 0)
        log.thread.join(TIMEOUT)
        # Two deploys went through, two reloads; the refused ones sent no signal.
        self.assertEqual(log.count(r"signal=HUP"), 2)
        self.assertEqual(log.count(r"event=reloaded"), 2)
        self.assertEqual(log.count(r"reload_failed"), 0)

    def test_first_install_refused_leaves_nothing(self):
        """With no previous pair, a refused pair is removed rather than left for the next
        start to trip over."""
        a = make_pair(os.path.join(self.dir, "live-a"))
        c = make_pair(os.path.join(self.dir, "live-c"))
        r = self.hook((c[0], a[1]))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(os.listdir(self.tls), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
