#!/usr/bin/env python3
"""The rehearsal's internet: one HTTP exchange on stdin/stdout, run by QEMU's user network for each
connection gw forwards to 10.0.2.100:80 (`guestfwd=…-cmd:`), so nothing listens on the host.

GET /stream answers a line every 0.2 s (at most 10 minutes) and, when a write fails (gw cut the
flow), appends the time to the file named by its argument; any other path answers `uplink ok`.
"""
import sys
import time


def main() -> None:
    cut_log = sys.argv[1]
    request = sys.stdin.buffer.readline().decode("latin-1", "replace")
    while sys.stdin.buffer.readline() not in (b"\r\n", b"\n", b""):
        pass
    out = sys.stdout.buffer
    if " /stream " in request:
        out.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        try:
            for n in range(3000):
                out.write(b"tick %d\n" % n)
                out.flush()
                time.sleep(0.2)
        except OSError:
            with open(cut_log, "a", encoding="utf-8") as f:
                f.write(f"{time.time():.3f}\n")
        return
    out.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nuplink ok\n")
    out.flush()


if __name__ == "__main__":
    main()
