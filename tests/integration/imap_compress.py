"""COMPRESS=DEFLATE (RFC 4978) against the real binary with a zlib client: over IMAPS (the
DEFLATE stream inside TLS) and over plaintext. The OK comes uncompressed; after it every
command is sent as raw DEFLATE with a sync flush and every response must arrive complete
without more input from the client (the server flushes per response); the inflated bytes are
checked exactly; a second COMPRESS is NO [COMPRESSIONACTIVE]; a message streamed from the
file (FETCH BODY[]) and an APPEND literal survive both directions; the compression ratio of
FETCH 1:* (ENVELOPE BODYSTRUCTURE) is printed.
"""
import os
import re
import socket
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, USERS  # noqa: E402

PW = USERS["alice"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def msg(i):
    body = "".join(f"line {k} of message {i}: the quick brown fox jumps over the lazy dog\r\n"
                   for k in range(40))
    return (f"From: Sender {i} <s{i}@example.org>\r\nTo: alice@example.org\r\n"
            f"Subject: message {i}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{i}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode()


class ZClient:
    def __init__(self, port, tls_ctx=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.s = tls_ctx.wrap_socket(s, server_hostname="127.0.0.1") if tls_ctx else s
        self.plain = b""      # inflated (or plain) bytes not consumed yet
        self.z = None
        self.wire_in = 0      # bytes read from the socket since compression started
        self.greeting = self.line()

    def start(self):
        self.z = zlib.decompressobj(-15)
        self.d = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.wire_in = 0

    def send(self, data):
        if self.z is not None:
            data = self.d.compress(data) + self.d.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(1 << 16)
        if not chunk:
            raise EOFError("closed; had %r" % self.plain[:200])
        if self.z is not None:
            self.wire_in += len(chunk)
            self.plain += self.z.decompress(chunk)
        else:
            self.plain += chunk

    def line(self):
        while b"\r\n" not in self.plain:
            self._fill()
        i = self.plain.index(b"\r\n") + 2
        out, self.plain = self.plain[:i], self.plain[i:]
        return out

    def until_tagged(self, tag):
        parts, prefix = [], tag.encode() + b" "
        while True:
            ln = self.line()
            parts.append(ln)
            m = re.search(rb"\{(\d+)\+?\}\r\n$", ln)
            if m:
                n = int(m.group(1))
                while len(self.plain) < n:
                    self._fill()
                parts.append(self.plain[:n])
                self.plain = self.plain[n:]
                continue
            if ln.startswith(prefix):
                return b"".join(parts)

    def cmd(self, tag, text):
        self.send(f"{tag} {text}\r\n".encode())
        return self.until_tagged(tag)


def session(srv, port, tls):
    c = ZClient(port, srv.tls_context() if tls else None)
    check(c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1"), c.greeting)
    out = c.cmd("l", f'LOGIN alice "{PW}"')
    check(b" COMPRESS=DEFLATE" in out and out.startswith(b"l OK"), out)
    c.send(b"c COMPRESS DEFLATE\r\n")
    out = c.line()  # the OK is not compressed
    check(out == b"c OK DEFLATE active.\r\n", out)
    check(c.plain == b"", c.plain)
    c.start()
    return c


def run(srv, port, tls, n):
    c = session(srv, port, tls)
    out = c.cmd("n", "NOOP")
    check(out == b"n OK NOOP completed.\r\n", out)
    out = c.cmd("c2", "COMPRESS DEFLATE")
    check(out == b"c2 NO [COMPRESSIONACTIVE] DEFLATE is already active.\r\n", out)
    data = msg(999)
    c.send(f"a APPEND INBOX {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    out = c.until_tagged("a")
    check(re.match(rb"^a OK \[APPENDUID \d+ %d\] Append completed\.\r\n$" % (n + 1), out), out)
    out = c.cmd("s", "EXAMINE INBOX")
    check(b"* %d EXISTS\r\n" % (n + 1) in out and out.endswith(b"s OK [READ-ONLY] "
                                                              b"Examine completed.\r\n"), out)
    out = c.cmd("f", f"UID FETCH {n + 1} BODY.PEEK[]")
    want = b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (n + 1, n + 1, len(data)) + data + \
        b")\r\nf OK Fetch completed.\r\n"
    check(out == want, out[:300])
    out = c.cmd("o", "LOGOUT")
    check(out == b"* BYE Logging out.\r\no OK Logout completed.\r\n", out)
    c.s.close()


def main():
    srv = Server()
    n = 200
    for i in range(n):
        srv.deliver(msg(i))
    srv.start()
    try:
        for name, port, tls in (("IMAPS", srv.port_tls, True),
                                ("plaintext", srv.port_plain, False)):
            c = session(srv, port, tls)
            out = c.cmd("s", "EXAMINE INBOX")
            check(out.endswith(b"s OK [READ-ONLY] Examine completed.\r\n"), out)
            before = c.wire_in
            out = c.cmd("e", "FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
            wire = c.wire_in - before
            check(out.count(b" FETCH (ENVELOPE (") == n, out[-200:])
            c.cmd("o", "LOGOUT")
            c.s.close()
            print(f"{name}: FETCH 1:* (ENVELOPE BODYSTRUCTURE) over {n} messages: "
                  f"{len(out)} bytes inflated, {wire} on the wire "
                  f"(ratio {len(out) / wire:.1f}:1)")
        run(srv, srv.port_tls, True, n)
        srv.stop()
        check("event=compress_started" in srv.log_text(), "no compress_started in the log")
        print("ok: COMPRESS=DEFLATE over IMAPS and plaintext")
    except Exception:
        sys.stderr.write(srv.log_text()[-4000:])
        raise
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
