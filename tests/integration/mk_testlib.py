"""What every integration harness needs, once: the binary and PAM paths from ctest's
environment, a free loopback port, a self-signed certificate, a pam_matrix stack, and
test directories a daemon dropped to `nobody` can use when the suite runs as root."""
import os
import pwd
import re
import socket
import subprocess

BIN = os.environ.get("MK_BINARY", "")
PAM_MATRIX = os.environ.get("MK_PAM_MATRIX", "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so")
# The store format under test: ctest registers the suites that run with both as NAME and
# NAME_mbox (MK_MAIL_FORMAT=mbox); harnesses put FORMAT_CONFIG into [server] and deliver
# with deliver_message().
MAIL_FORMAT = os.environ.get("MK_MAIL_FORMAT", "maildir")
MBOX = MAIL_FORMAT == "mbox"
FORMAT_CONFIG = "mail_format = mbox\n" if MBOX else ""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_cert(d):
    """A self-signed ECDSA certificate for 127.0.0.1 (certtool, from gnutls-bin)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    tmpl = os.path.join(d, "cert.tmpl")
    with open(tmpl, "w") as f:
        f.write('cn = "127.0.0.1"\nip_address = "127.0.0.1"\nexpiration_days = 2\n'
                'tls_www_server\nsigning_key\nencryption_key\n')
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template",
                    tmpl, "--outfile", cert], check=True, capture_output=True, timeout=60)
    return cert, key


def write_pam_matrix(d, service, users):
    """A PAM service SERVICE in D/pam.d (for pam_confdir) checking USERS {name: password}
    with pam_matrix. Returns the pam.d directory."""
    pamdir = os.path.join(d, "pam.d")
    os.makedirs(pamdir, exist_ok=True)
    passdb = os.path.join(d, "passdb")
    with open(passdb, "w") as f:
        for u, p in users.items():
            f.write(f"{u}:{p}:{service}\n")
    with open(os.path.join(pamdir, service), "w") as f:
        f.write(f"auth required {PAM_MATRIX} passdb={passdb}\n"
                f"account required {PAM_MATRIX} passdb={passdb}\n")
    return pamdir


def prepare_for_nobody(d, mail):
    """Run as root, the daemon drops to nobody: let it in. Returns (owner uid/gid or None,
    the mail_user line for the config)."""
    if os.geteuid() != 0:
        return None, ""
    pw = pwd.getpwnam("nobody")
    owner = (pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o755)
    os.chown(mail, *owner)
    return owner, "mail_user = nobody"


def crlf(data):
    """A message as the store serves it: every bare LF counts as CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def mbox_state_dir(user_root, folder="INBOX"):
    """Where an mbox store keeps FOLDER's own files (UID list, POP3 record, ...)."""
    return os.path.join(user_root, ".mailkeep", "box", folder)


def deliver_mbox(user_root, data, owner=None, folder="INBOX"):
    """An MTA appending DATA to the user's mbox (tests/integration/mbox_tools.py)."""
    import mbox_tools
    mbox_tools.deliver(mbox_tools.mbox_path(user_root, folder), data, owner)


def as_delivered(data):
    """DATA as the store holds it after an MTA delivered it: unchanged in a Maildir; in an
    mbox (mboxo) with LF line ends, "From " lines quoted and the last line ended, as exim and
    postfix write it (mbox_tools.mta_bytes)."""
    if not MBOX:
        return data
    out = re.sub(rb"(?m)^From ", b">From ", data.replace(b"\r\n", b"\n"))
    return out if out.endswith(b"\n") else out + b"\n"
