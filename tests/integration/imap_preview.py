"""PREVIEW (RFC 8970) against the real binary, exact bytes: an MTA delivers a multipart message
(quoted-printable ISO-8859-1 text and HTML) and an HTML-only one; PREVIEW (LAZY) is NIL until
the server has parsed a message, PREVIEW gives the normalized text (a literal when it is 8-bit),
and after a restart LAZY answers from the folder's cache.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Raw, Server, USERS  # noqa: E402

PW = USERS["alice"]
M1 = (b"From: a@example.org\r\nSubject: one\r\nMIME-Version: 1.0\r\n"
      b"Content-Type: multipart/alternative; boundary=zz\r\n\r\n--zz\r\n"
      b"Content-Type: text/plain; charset=iso-8859-1\r\n"
      b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
      b"Caf=E9 at  noon?=\r\n Bring\r\n\r\n\tthe =\r\nmaps.\r\n> quoted reply\r\n--zz\r\n"
      b"Content-Type: text/html\r\n\r\n<p>Cafe</p>\r\n--zz--\r\n")
M2 = (b"From: b@example.org\r\nSubject: two\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
      b"<html><head><style>p{}</style></head><body><p>Total:&nbsp;5&euro;</p>"
      b"<p>Thanks&#33;</p></body></html>\r\n")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def login(srv):
    c = Raw(srv.port_plain)
    out = c.cmd("l", f'LOGIN alice "{PW}"')
    check(out.startswith(b"l OK [CAPABILITY ") and b" PREVIEW" in out, out)
    out = c.cmd("s", "SELECT INBOX")
    check(out.endswith(b"s OK [READ-WRITE] Select completed.\r\n"), out)
    return c


def main():
    srv = Server()
    try:
        srv.start()
        srv.deliver(M1)
        srv.deliver(M2)
        c = login(srv)
        out = c.cmd("a", "FETCH 1:2 (PREVIEW (LAZY))")
        check(out == b"* 1 FETCH (PREVIEW NIL)\r\n* 2 FETCH (PREVIEW NIL)\r\n"
              b"a OK Fetch completed.\r\n", out)
        out = c.cmd("b", "FETCH 1:2 (PREVIEW)")
        check(out == b"* 1 FETCH (PREVIEW {30}\r\nCaf\xc3\xa9 at noon? Bring the maps.)\r\n"
              b'* 2 FETCH (PREVIEW "Total: 5&euro; Thanks!")\r\nb OK Fetch completed.\r\n', out)
        c.cmd("z", "LOGOUT")
        c.close()
        srv.stop()
        srv.started.clear()
        srv.start()
        c = login(srv)
        out = c.cmd("c", "UID FETCH 1:* (PREVIEW (LAZY))")
        check(out == b"* 1 FETCH (UID 1 PREVIEW {30}\r\nCaf\xc3\xa9 at noon? Bring the maps.)\r\n"
              b'* 2 FETCH (UID 2 PREVIEW "Total: 5&euro; Thanks!")\r\n'
              b"c OK Fetch completed.\r\n", out)
        out = c.cmd("d", "FETCH 1 (PREVIEW (LAZY LAZY) PREVIEW)")
        check(out.startswith(b"* 1 FETCH (PREVIEW {30}\r\n") and out.endswith(b"d OK Fetch completed.\r\n"), out)
        out = c.cmd("e", "FETCH 1 (PREVIEW ())")
        check(out == b"e BAD Invalid FETCH items.\r\n", out)
        c.cmd("z", "LOGOUT")
        c.close()
        print("imap_preview: all passed")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
