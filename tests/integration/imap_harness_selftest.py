"""The raw IMAP client of imap_harness.py against a scripted peer (no daemon): more than 1 MiB
of answers read line by line. Raw drops consumed input past 1 MiB; line() used to keep
searching at the old offset after that and waited for ever."""
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imap_harness import Raw  # noqa: E402


def main():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def serve():
        c, _ = ls.accept()
        c.sendall(b"* OK hi\r\n")
        for line in c.makefile("rb"):
            c.sendall(line.split()[0] + b" OK NOOP completed.\r\n")
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    r = Raw(ls.getsockname()[1], timeout=10)
    for i in range(60000):  # 60,000 x 23 octets: past the 1 MiB compaction
        out = r.cmd("n", "NOOP")
        if out != b"n OK NOOP completed.\r\n":
            raise AssertionError(f"answer {i}: {out!r}")
    r.close()
    print("ok")


if __name__ == "__main__":
    main()
