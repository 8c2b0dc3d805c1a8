"""LITERAL- (RFC 7888) against the real binary: with `imap_literal_plus = no` the server
advertises LITERAL- (never LITERAL+), takes non-synchronising literals up to 4096 octets,
answers a larger one with BAD [TOOBIG] after dropping its bytes (the connection and the next
pipelined command go on), and still takes large synchronising literals; APPEND the same. With
the default (yes) it advertises LITERAL+ and takes a larger non-synchronising literal.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Raw, Server, USERS  # noqa: E402

PW = USERS["alice"]
TOOBIG = b"BAD [TOOBIG] Non-synchronizing literal too large (LITERAL-)\r\n"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def caps(greeting):
    return greeting.split(b"[CAPABILITY ", 1)[1].split(b"]", 1)[0].split(b" ")


def literal_minus(srv):
    c = Raw(srv.port_plain)
    check(b"LITERAL-" in caps(c.greeting) and b"LITERAL+" not in caps(c.greeting), c.greeting)
    out = c.cmd("c", "CAPABILITY")
    check(b" LITERAL- " in out and b"LITERAL+" not in out, out)
    # Before login: 4096 octets fit (the pre-login literal cap is 8 KiB), 4097 do not.
    c.send(b"l1 LOGIN {5+}\r\nalice {" + str(len(PW)).encode() + b"+}\r\n" + PW.encode() +
           b"\r\n")
    out = c.until_tagged("l1")
    check(out.startswith(b"l1 OK [CAPABILITY ") and b" LITERAL- " in out, out)
    c.send(b"x1 ID {4097+}\r\n" + b"a" * 4097 + b"\r\nx2 NOOP\r\n")
    out = c.until_tagged("x1")
    check(out == b"x1 " + TOOBIG, out)
    check(c.until_tagged("x2") == b"x2 OK NOOP completed.\r\n", "x2")
    c.send(b"x3 LIST \"\" {4096+}\r\n" + b"n" * 4096 + b"\r\n")
    out = c.until_tagged("x3")
    check(out == b"x3 OK List completed.\r\n", out)
    # A synchronising literal of 5000 octets is invited and taken.
    c.send(b"x4 LIST \"\" {5000}\r\n")
    check(c.line() == b"+ Ready for literal data\r\n", "continuation")
    c.send(b"n" * 5000 + b"\r\n")
    out = c.until_tagged("x4")
    check(out == b"x4 OK List completed.\r\n", out)
    # APPEND: a non-synchronising message over 4096 octets is refused, nothing stored.
    body = b"Subject: big\r\n\r\n" + b"z" * 5000 + b"\r\n"
    c.send(b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    check(c.until_tagged("a1") == b"a1 " + TOOBIG, "a1")
    out = c.cmd("s1", "STATUS INBOX (MESSAGES)")
    check(out == b"* STATUS INBOX (MESSAGES 0)\r\ns1 OK Status completed.\r\n", out)
    small = b"Subject: small\r\n\r\nhi\r\n"
    c.send(b"a2 APPEND INBOX {%d+}\r\n" % len(small) + small + b"\r\n")
    out = c.until_tagged("a2")
    check(out.startswith(b"a2 OK [APPENDUID "), out)
    c.send(b"a3 APPEND INBOX {%d}\r\n" % len(body))
    check(c.line() == b"+ Ready for literal data\r\n", "append continuation")
    c.send(body + b"\r\n")
    out = c.until_tagged("a3")
    check(out.startswith(b"a3 OK [APPENDUID "), out)
    check(c.cmd("z", "LOGOUT").endswith(b"z OK Logout completed.\r\n"), "logout")
    c.close()


def literal_plus(srv):
    c = Raw(srv.port_plain)
    check(b"LITERAL+" in caps(c.greeting) and b"LITERAL-" not in caps(c.greeting), c.greeting)
    out = c.cmd("l", f'LOGIN alice "{PW}"')
    check(out.startswith(b"l OK "), out)
    c.send(b"x1 LIST \"\" {5000+}\r\n" + b"n" * 5000 + b"\r\n")
    out = c.until_tagged("x1")
    check(out == b"x1 OK List completed.\r\n", out)
    c.close()


def main():
    for extra, fn in (("imap_literal_plus = no", literal_minus), ("", literal_plus)):
        srv = Server(extra_server=extra)
        try:
            srv.start()
            fn(srv)
            print(f"ok: {fn.__name__}")
        finally:
            srv.cleanup()
    print("imap_literal_minus: all passed")


if __name__ == "__main__":
    main()
