#!/usr/bin/env python3
"""What a proxy's client connections cost in anonymous memory.

Usage: conn_memory.py PORT PID [N]

Opens N (default 256) connections to the proxy on 127.0.0.1:PORT at once and reads
the RssAnon of process PID (the one that serves them) after each step: the
connections open, then each has sent its first byte, then each has had one whole
GET answered (keep-alive, so every connection stays open). Prints one line: the KiB
per connection each step added, as "open first-byte request total".
"""

import socket
import sys
import time


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise SystemExit(f"no RssAnon for pid {pid}")


def read_answer(sock):
    """Reads one HTTP/1.1 answer, which must be a 200 with a Content-Length body: a
    failed request would measure the cost of an error, not of a connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the proxy closed a connection before answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    if status.split(b" ")[1:2] != [b"200"]:
        raise SystemExit(f"the proxy answered {status.decode(errors='replace')!r}, not 200")
    length = None
    for line in fields:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise SystemExit("the proxy's answer has no Content-Length")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the proxy closed a connection in the middle of an answer")
        body += chunk


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    settle = 0.5
    steps = [rss_anon_kib(pid)]
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    time.sleep(settle)
    steps.append(rss_anon_kib(pid))
    for sock in socks:
        sock.sendall(b"G")
    time.sleep(settle)
    steps.append(rss_anon_kib(pid))
    for sock in socks:
        sock.sendall(b"ET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    for sock in socks:
        read_answer(sock)
    time.sleep(settle)
    steps.append(rss_anon_kib(pid))
    for sock in socks:
        sock.close()
    added = [(b - a) / n for a, b in zip(steps, steps[1:])]
    print(" ".join(f"{kib:.1f}" for kib in added + [sum(added)]))


if __name__ == "__main__":
    main()
