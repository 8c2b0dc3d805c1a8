"""UTF8=ACCEPT (RFC 6855) against the real binary, exact bytes: ENABLE UTF8=ACCEPT before
SELECT; UTF-8 mailbox names in CREATE, LIST, STATUS, SELECT, RENAME, APPEND, COPY and MOVE
(a plain IMAP4rev1 session sees the same folders in modified UTF-7, and they are stored that
way on disk, as Dovecot stores them); APPEND with the UTF8 (~{n}) data item, its message
read back byte for byte, and its size checked against the quota at once; SEARCH CHARSET
refused with BAD; ENABLE with a mailbox selected BAD.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Raw, Server, USERS  # noqa: E402

PW = USERS["alice"]
NAME = "Gesch\u00e4ftlich.\u65e5\u672c".encode()      # Geschäftlich.日本
MUTF7 = b"Gesch&AOQ-ftlich.&ZeVnLA-"
MSG = "Subject: \u00dcbersicht \u2014 \u65e5\u672c\r\nFrom: J\u00fcrgen <j@example.de>\r\n\r\n" \
      "Gr\u00fc\u00dfe\r\n".encode()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def login(srv):
    c = Raw(srv.port_plain)
    out = c.cmd("l", f'LOGIN alice "{PW}"')
    check(out.startswith(b"l OK [CAPABILITY ") and b" UTF8=ACCEPT" in out, out)
    return c


def main():
    srv = Server()
    try:
        srv.start()
        c = login(srv)
        old = login(srv)
        check(c.cmd("a", "ENABLE UTF8=ACCEPT") ==
              b"* ENABLED UTF8=ACCEPT\r\na OK ENABLE completed.\r\n", "enable")
        c.send(b'b CREATE "' + NAME + b'"\r\n')
        out = c.until_tagged("b")
        check(out.startswith(b"b OK [MAILBOXID ("), out)
        c.send(b'c LIST "" "Gesch*"\r\n')
        out = c.until_tagged("c")
        check(out == b'* LIST (\\HasChildren) "." "Gesch\xc3\xa4ftlich"\r\n'
              b'* LIST (\\HasNoChildren) "." "' + NAME + b'"\r\nc OK List completed.\r\n', out)
        out = old.cmd("d", 'LIST "" Gesch*')
        check(out == b'* LIST (\\HasChildren) "." Gesch&AOQ-ftlich\r\n'
              b'* LIST (\\HasNoChildren) "." ' + MUTF7 + b"\r\nd OK List completed.\r\n", out)
        check(os.path.isdir(os.path.join(srv.maildir(), "." + MUTF7.decode())), "on disk")
        # APPEND with the UTF8 data item (a synchronising literal8)
        c.send(b'e APPEND "' + NAME + b'" (\\Seen) UTF8 (~{%d}\r\n' % len(MSG))
        check(c.line() == b"+ Ready for literal data\r\n", "continuation")
        c.send(MSG + b")\r\n")
        out = c.until_tagged("e")
        check(out.startswith(b"e OK [APPENDUID ") and out.endswith(b" 1] Append completed.\r\n"),
              out)
        c.send(b'f STATUS "' + NAME + b'" (MESSAGES)\r\n')
        out = c.until_tagged("f")
        check(out == b'* STATUS "' + NAME + b'" (MESSAGES 1)\r\nf OK Status completed.\r\n', out)
        c.send(b'g SELECT "' + NAME + b'"\r\n')
        out = c.until_tagged("g")
        check(out.endswith(b"g OK [READ-WRITE] Select completed.\r\n") and b"* LIST" not in out,
              out)
        out = c.cmd("h", "FETCH 1 BODY.PEEK[]")
        check(out == b"* 1 FETCH (BODY[] {%d}\r\n" % len(MSG) + MSG +
              b")\r\nh OK Fetch completed.\r\n", out)
        out = c.cmd("i", "SEARCH CHARSET UTF-8 SUBJECT x")
        check(out == b"i BAD No CHARSET after ENABLE UTF8=ACCEPT.\r\n", out)
        c.send("j SEARCH SUBJECT \"\u65e5\u672c\"\r\n".encode())
        check(c.until_tagged("j") == b"* SEARCH 1\r\nj OK Search completed.\r\n", "search")
        check(c.cmd("k", "ENABLE UTF8=ACCEPT") ==
              b"k BAD ENABLE is not allowed with a mailbox selected.\r\n", "enable selected")
        c.send("m MOVE 1 \"\u00c4rger\"\r\n".encode())
        check(c.until_tagged("m") == b"m NO [TRYCREATE] Mailbox doesn't exist.\r\n", "move")
        c.send("n RENAME \"Gesch\u00e4ftlich\" \"\u00c4rger\"\r\n".encode())
        check(c.until_tagged("n") == b"n OK Rename completed.\r\n", "rename")
        out = old.cmd("o", "STATUS &AMQ-rger.&ZeVnLA- (MESSAGES)")
        check(out == b"* STATUS &AMQ-rger.&ZeVnLA- (MESSAGES 1)\r\no OK Status completed.\r\n",
              out)
        c.cmd("z", "LOGOUT")
        old.cmd("z", "LOGOUT")
    finally:
        srv.cleanup()
    quota()
    print("imap_utf8_accept: all passed")


def quota():
    """The UTF8 literal's size counts against the quota before any byte is stored."""
    srv = Server(extra_server="quota_storage = 2K")
    try:
        srv.start()
        c = login(srv)
        big = MSG + b"x" * 3000 + b"\r\n"
        c.send(b"a APPEND INBOX UTF8 (~{%d+}\r\n" % len(big) + big + b")\r\n")
        out = c.until_tagged("a")
        check(out == b"a NO [OVERQUOTA] Quota exceeded\r\n", out)
        c.send(b"b APPEND INBOX UTF8 (~{%d+}\r\n" % len(MSG) + MSG + b")\r\n")
        out = c.until_tagged("b")
        check(out.startswith(b"b OK [APPENDUID "), out)
        out = c.cmd("c", "STATUS INBOX (MESSAGES)")
        check(out == b"* STATUS INBOX (MESSAGES 1)\r\nc OK Status completed.\r\n", out)
        c.cmd("z", "LOGOUT")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
