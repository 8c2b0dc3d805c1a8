"""SORT, ESORT, SORT=DISPLAY and THREAD (RFC 5256, 5267, 5957) against the real binary: a fixture
folder of ten messages with known answers, every response compared byte for byte.

The fixture (seq: internal date; Date; From; To; Subject; Message-ID; References):
  1  01-Jan 10:00  Fri 01 Jan 09:00 +0000   Carol <carol>  Bob <bob>      Project plan         p1
  2  02-Jan        Sat 02 Jan 08:00 -0500   alice          =?..?Emile <emile>, Cc zed
                                                                          Re: Project plan     p2  p1
  3  03-Jan        (none: internal date)    Bob <bob>      carol          [team] Lunch         l1
  4  04-Jan        Sat 02 Jan 12:00 +0000   dave           -              Fwd: lunch (fwd)     l2
  5  05-Jan        Tue 05 Jan 10:00 +0100   =?latin1?Emile alice          Re: Re: Project plan p3  p1 p2
  6  06-Jan        Mon 04 Jan 10:00 +0000   bob            Team: bob, carol;  Budget           b2  b1 (missing)
  7  07-Jan        Thu 07 Jan 10:00 +0000   carol          undisclosed:;  Re: Budget           b3  b1 (missing)
  8  08-Jan        "not a date"             -              -              -                    p2 (duplicate)
  9  09-Jan        Sat 09 Jan 10:00 +0000   Alice <alice>  -              =?utf-8?q?résumé?=   r1  r2 (a loop)
 10  10-Jan        Fri 01 Jan 09:00 +0000   bob            -              RÉSUMÉ (raw UTF-8)   r2  r1
A first message is appended and expunged, so UIDs are the sequence numbers + 1.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Server, Raw, USERS  # noqa: E402

PW = USERS["alice"]
SIZES = [900, 500, 700, 500, 1100, 1000, 800, 400, 600, 450]


def message(headers, size):
    """The header lines (UTF-8 where not ASCII), an empty line, a body padding it to SIZE."""
    head = "".join(f"{h}\r\n" for h in headers).encode("utf-8") + b"\r\n"
    pad = size - len(head) - 2
    check(pad >= 0, f"{headers} fit in {size}")
    return head + b"x" * pad + b"\r\n"


FIXTURE = [
    ("01-Jan-2021 10:00:00 +0000", ["From: Carol <carol@c.org>", "To: Bob <bob@b.org>",
                                    "Subject: Project plan",
                                    "Date: Fri, 01 Jan 2021 09:00:00 +0000",
                                    "Message-ID: <p1@x>"]),
    ("02-Jan-2021 10:00:00 +0000", ["From: alice@a.org",
                                    "To: =?utf-8?q?=C3=89mile?= <emile@e.org>",
                                    "Cc: zed@z.org", "Subject: Re: Project plan",
                                    "Date: Sat, 02 Jan 2021 08:00:00 -0500",
                                    "Message-ID: <p2@x>", "In-Reply-To: <p1@x>",
                                    "References: <p1@x>"]),
    ("03-Jan-2021 10:00:00 +0000", ["From: Bob <bob@b.org>", "To: carol@c.org",
                                    "Subject: [team] Lunch", "Message-ID: <l1@x>"]),
    ("04-Jan-2021 10:00:00 +0000", ["From: dave@d.org", "Subject: Fwd: lunch (fwd)",
                                    "Date: Sat, 02 Jan 2021 12:00:00 +0000",
                                    "Message-ID: <l2@x>"]),
    ("05-Jan-2021 10:00:00 +0000", ["From: =?iso-8859-1?q?=C9mile?= <emile@e.org>",
                                    "To: alice@a.org", "Subject: Re: Re: Project plan",
                                    "Date: Tue, 05 Jan 2021 10:00:00 +0100",
                                    "Message-ID: <p3@x>", "References: <p1@x>\r\n <p2@x>"]),
    ("06-Jan-2021 10:00:00 +0000", ["From: bob@b.org", "To: Team: bob@b.org, carol@c.org;",
                                    "Subject: Budget", "Date: Mon, 04 Jan 2021 10:00:00 +0000",
                                    "Message-ID: <b2@x>", "References: <b1@missing>"]),
    ("07-Jan-2021 10:00:00 +0000", ["From: carol@c.org", "To: undisclosed-recipients:;",
                                    "Subject: Re: Budget",
                                    "Date: Thu, 07 Jan 2021 10:00:00 +0000",
                                    "Message-ID: <b3@x>", "In-Reply-To: <b2@x>",
                                    "References: <b1@missing>"]),
    ("08-Jan-2021 10:00:00 +0000", ["Date: not a date", "Message-ID: <p2@x>"]),
    ("09-Jan-2021 10:00:00 +0000", ["From: Alice <alice@a.org>",
                                    "Subject: =?utf-8?q?r=C3=A9sum=C3=A9?=",
                                    "Date: Sat, 09 Jan 2021 10:00:00 +0000",
                                    "Message-ID: <r1@x>", "References: <r2@x>"]),
    ("10-Jan-2021 10:00:00 +0000", ["From: bob@b.org", "Subject: R\u00c9SUM\u00c9",
                                    "Date: Fri, 01 Jan 2021 09:00:00 +0000",
                                    "Message-ID: <r2@x>", "References: <r1@x>"]),
]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect(c, line, want):
    """Send LINE with tag t; the whole answer must be WANT (untagged lines) + the tagged line."""
    out = c.cmd("t", line)
    if isinstance(want, str):
        want = want.encode()
    check(out == want, f"{line}\n got: {out!r}\nwant: {want!r}")


def ok(untagged, what="Sort"):
    return (untagged + "\r\n" if untagged else "") + f"t OK {what} completed.\r\n"


def load(c):
    first = message(["Subject: dropped"], 100)
    c.send(b'a APPEND INBOX {%d+}\r\n' % len(first) + first + b"\r\n")
    check(b"a OK" in c.until_tagged("a"), "append")
    for i, (idate, headers) in enumerate(FIXTURE):
        data = message(headers, SIZES[i])
        c.send(f'a APPEND INBOX "{idate}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
        check(b"a OK" in c.until_tagged("a"), f"append {i + 1}")
    out = c.cmd("s", "SELECT INBOX")
    check(b"* 11 EXISTS" in out, out)
    check(b"OK" in c.cmd("d", "STORE 1 +FLAGS.SILENT (\\Deleted)"), "store")
    check(b"* 1 EXPUNGE" in c.cmd("e", "EXPUNGE"), "expunge")


def test_sort(c):
    expect(c, "SORT (ARRIVAL) UTF-8 ALL", ok("* SORT 1 2 3 4 5 6 7 8 9 10"))
    expect(c, "SORT (REVERSE ARRIVAL) UTF-8 ALL", ok("* SORT 10 9 8 7 6 5 4 3 2 1"))
    # sent dates in UTC; 3 has none and 8 an unparsable one (internal date); 1 and 10 tie
    expect(c, "SORT (DATE) UTF-8 ALL", ok("* SORT 1 10 4 2 3 6 5 7 8 9"))
    # REVERSE turns the key around, ties stay in mailbox order
    expect(c, "SORT (REVERSE DATE) UTF-8 ALL", ok("* SORT 9 8 7 5 6 3 2 4 1 10"))
    expect(c, "SORT (SIZE) UTF-8 ALL", ok("* SORT 8 10 2 4 9 3 7 1 6 5"))
    expect(c, "SORT (REVERSE SIZE) UTF-8 ALL", ok("* SORT 5 6 1 7 3 9 2 4 10 8"))
    # base subjects: "" BUDGET LUNCH "PROJECT PLAN" RÉSUMÉ (encoded and raw agree)
    expect(c, "SORT (SUBJECT) UTF-8 ALL", ok("* SORT 8 6 7 3 4 1 2 5 9 10"))
    expect(c, "SORT (SUBJECT REVERSE DATE) UTF-8 ALL", ok("* SORT 8 7 6 3 4 5 2 1 9 10"))
    expect(c, "SORT (FROM) UTF-8 ALL", ok("* SORT 8 2 9 3 6 10 1 7 4 5"))
    # a group counts by its name (as in Dovecot), also an empty one
    expect(c, "SORT (TO) UTF-8 ALL", ok("* SORT 4 8 9 10 5 1 3 2 6 7"))
    expect(c, "SORT (CC) US-ASCII ALL", ok("* SORT 1 3 4 5 6 7 8 9 10 2"))
    # SORT=DISPLAY: the display name (RFC 2047 decoded), else mailbox@host
    expect(c, "SORT (DISPLAYFROM) UTF-8 ALL", ok("* SORT 8 9 2 3 6 10 1 7 4 5"))
    expect(c, "SORT (DISPLAYTO) UTF-8 ALL", ok("* SORT 4 8 9 10 5 1 3 2 6 7"))
    expect(c, "sort (reverse displayfrom size) utf-8 all", ok("* SORT 5 4 7 1 10 6 3 2 9 8"))
    # the search part: SEARCH's keys, and charset UTF-8 strings
    expect(c, "SORT (DATE) UTF-8 SINCE 5-Jan-2021", ok("* SORT 10 6 5 7 8 9"))
    expect(c, "SORT (DATE) UTF-8 OR FROM bob SUBJECT lunch", ok("* SORT 10 4 3 6"))
    c.send(b"t SORT (ARRIVAL) UTF-8 FROM {6+}\r\n\xc3\x89mile\r\n")
    out = c.until_tagged("t")
    check(out == ok("* SORT 5").encode(), out)
    expect(c, "SORT (DATE) UTF-8 SUBJECT nothing", ok("* SORT"))
    expect(c, "UID SORT (DATE) UTF-8 ALL", ok("* SORT 2 11 5 3 4 7 6 8 9 10"))
    expect(c, "UID SORT (SUBJECT) UTF-8 UID 5:8", ok("* SORT 7 8 5 6"))


def test_esort(c):
    expect(c, "SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL",
           ok('* ESEARCH (TAG "t") MIN 1 MAX 9 ALL 1,10,4,2:3,6,5,7:9 COUNT 10'))
    expect(c, "SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL", ok('* ESEARCH (TAG "t") ALL 10,9,8,7,6,5,4,3,2,1'))
    expect(c, "UID SORT RETURN (COUNT) (FROM) UTF-8 ALL", ok('* ESEARCH (TAG "t") UID COUNT 10'))
    expect(c, "UID SORT RETURN (MIN MAX) (SIZE) UTF-8 ALL",
           ok('* ESEARCH (TAG "t") UID MIN 9 MAX 6'))
    expect(c, "SORT RETURN (MIN MAX ALL COUNT) (DATE) UTF-8 SUBJECT nothing",
           ok('* ESEARCH (TAG "t") COUNT 0'))
    # SAVE (SEARCHRES): no response of its own; $ is the set of matches
    expect(c, "SORT RETURN (SAVE) (DATE) UTF-8 FROM bob", ok(""))
    expect(c, "SEARCH $", ok("* SEARCH 3 6 10", "Search"))
    expect(c, "SORT RETURN (SAVE MIN) (DATE) UTF-8 FROM bob", ok('* ESEARCH (TAG "t") MIN 10'))
    expect(c, "UID SEARCH $", ok("* SEARCH 11", "Search"))


def test_modseq(c):
    """A MODSEQ search key (RFC 7162 §3.1.6): the highest mod-sequence of the matches."""
    out = c.cmd("m", "FETCH 1:* (MODSEQ)")
    seqs = {int(a): int(b) for a, b in re.findall(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", out)}
    check(sorted(seqs) == list(range(1, 11)), out)
    top = max(seqs.values())
    expect(c, "SORT (REVERSE ARRIVAL) UTF-8 MODSEQ 1",
           ok(f"* SORT 10 9 8 7 6 5 4 3 2 1 (MODSEQ {top})"))
    expect(c, "UID SORT RETURN (COUNT MAX) (DATE) UTF-8 MODSEQ 1 SINCE 5-Jan-2021",
           ok(f'* ESEARCH (TAG "t") UID MAX 10 COUNT 6 MODSEQ {max(seqs[i] for i in range(5, 11))}'))
    expect(c, "SORT (DATE) UTF-8 MODSEQ 1 SUBJECT nothing", ok("* SORT"))


def test_thread(c):
    expect(c, "THREAD ORDEREDSUBJECT UTF-8 ALL",
           ok("* THREAD (1 (2)(5))(10 9)(4 3)(6 7)(8)", "Thread"))
    # References: p1 > p2 > p3; the second p2 is a message of its own; b1 is missing (a
    # dummy holds 6 and 7); r1/r2 reference each other (the second link is not made); the
    # two lunches are gathered by subject, the forward under the original
    expect(c, "THREAD REFERENCES UTF-8 ALL",
           ok("* THREAD (1 2 5)(10 9)(3 4)((6)(7))(8)", "Thread"))
    expect(c, "UID THREAD REFERENCES UTF-8 ALL",
           ok("* THREAD (2 3 6)(11 10)(4 5)((7)(8))(9)", "Thread"))
    # without 2, the duplicate p2 (8) takes its place as 5's parent
    expect(c, "THREAD REFERENCES UTF-8 SINCE 5-Jan-2021",
           ok("* THREAD (10 9)((6)(7))(8 5)", "Thread"))
    expect(c, "THREAD REFERENCES US-ASCII SUBJECT nothing", ok("* THREAD", "Thread"))


def test_errors(c):
    expect(c, "THREAD FOO UTF-8 ALL", "t BAD Unknown threading algorithm.\r\n")
    expect(c, "THREAD REFERENCES KOI8-R ALL",
           "t NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.\r\n")
    expect(c, "SORT (DATE) ISO-8859-1 ALL",
           "t NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.\r\n")
    expect(c, "SORT DATE UTF-8 ALL", "t BAD SORT needs a list of sort criteria.\r\n")
    expect(c, "SORT () UTF-8 ALL", "t BAD SORT needs a list of sort criteria.\r\n")
    expect(c, "SORT (REVERSE) UTF-8 ALL", "t BAD REVERSE needs a sort key after it.\r\n")
    expect(c, "SORT (REVERSE REVERSE DATE) UTF-8 ALL", "t BAD Invalid sort criterion.\r\n")
    expect(c, "SORT (NAME) UTF-8 ALL", "t BAD Invalid sort criterion.\r\n")
    expect(c, "SORT (DATE)", "t BAD Missing charset.\r\n")
    expect(c, "SORT (DATE) UTF-8", "t BAD Missing search key.\r\n")
    expect(c, "SORT (DATE) UTF-8 FROB", "t BAD Unknown search key.\r\n")
    expect(c, "SORT RETURN (FIRST) (DATE) UTF-8 ALL", "t BAD Unknown RETURN option.\r\n")
    expect(c, "THREAD", "t BAD Unknown threading algorithm.\r\n")


def main():
    srv = Server().start()
    try:
        c = Raw(srv.port_plain)
        out = c.cmd("l", f'LOGIN alice "{PW}"')
        caps = re.search(rb"\[CAPABILITY ([^\]]*)\]", out).group(1).split()
        for cap in (b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=ORDEREDSUBJECT",
                    b"THREAD=REFERENCES"):
            check(cap in caps, f"{cap} advertised: {caps}")
        # not selected: the gate answers
        out = c.cmd("t", "SORT (DATE) UTF-8 ALL")
        check(out.startswith(b"t BAD") or out.startswith(b"t NO"), out)
        load(c)
        test_sort(c)
        test_esort(c)
        test_thread(c)
        test_errors(c)
        test_modseq(c)
        # still in step after all of it
        expect(c, "NOOP", "t OK NOOP completed.\r\n")
        c.cmd("o", "LOGOUT")
        # the log is read by another thread: wait for the line (bounded), not just look
        want = "event=imap_sort_refused cmd=THREAD status=BAD reason=Unknown"
        with srv.cond:
            srv.cond.wait_for(lambda: want in srv.log_text(), timeout=30)
        log = srv.log_text()
        check(want in log, "refusals are logged")
        for bad in ("level=error", "runtime error", "AddressSanitizer"):
            check(bad not in log, log[-2000:])
    except Exception:
        print("".join(line for line in srv.log if "level=debug" not in line)[-6000:])
        raise
    finally:
        code = srv.stop()
        srv.cleanup()
    check(code == 0, f"exit status {code}")
    print("ok")


if __name__ == "__main__":
    main()
