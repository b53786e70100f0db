#!/usr/bin/env python3
"""Threads, resident memory and open files of a weir broker holding many durable
queues (docs/benchmarks.md, "Many queues").

    python3 scripts/many-queues.py WEIR_BINARY [QUEUES] [CONNECTIONS]

Starts the broker on free loopback ports with a temporary data directory, declares
QUEUES (default 10,000) queues over AMQP on one connection (one pipelined
queue.declare each, durable), publishes one persistent message to each, and
prints, after the broker settles: the queues it took, its threads
(/proc/PID/task), VmRSS and open file descriptors. With CONNECTIONS, it then holds
that many idle AMQP connections to the same broker (`weir bench connections`) and
prints what the bench saw and the most descriptors the broker held meanwhile: the
queues must leave room for connections. Then it restarts the broker on the same
directory and prints the same figures once it has recovered.
"""
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def method(channel, class_id, method_id, args):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def read_frame(sock, buf):
    while len(buf) < 7:
        buf += sock.recv(65536)
    kind, channel, size = struct.unpack(">BHI", buf[:7])
    while len(buf) < 8 + size:
        buf += sock.recv(65536)
    return (kind, channel, buf[7:7 + size]), buf[8 + size:]


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    buf = b""
    (_, _, _), buf = read_frame(sock, buf)  # start
    auth = b"\x00guest\x00guest"
    sock.sendall(method(0, 10, 11, struct.pack(">I", 0) + shortstr("PLAIN")
                        + struct.pack(">I", len(auth)) + auth + shortstr("en_US")))
    (_, _, tune), buf = read_frame(sock, buf)  # tune
    sock.sendall(method(0, 10, 31, tune[4:]))  # tune-ok echoing the broker's
    sock.sendall(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
    (_, _, _), buf = read_frame(sock, buf)  # open-ok
    sock.sendall(method(1, 20, 10, shortstr("")))
    (_, _, _), buf = read_frame(sock, buf)  # channel open-ok
    return sock, buf


def declare_and_publish(port, count):
    sock, buf = connect(port)
    taken = 0
    batch = 500
    for start in range(0, count, batch):
        out = b""
        names = [f"q{i:05d}" for i in range(start, min(count, start + batch))]
        for name in names:
            # queue.declare: reserved, name, flags (durable), no arguments
            out += method(1, 50, 10, b"\x00\x00" + shortstr(name) + b"\x02"
                          + struct.pack(">I", 0))
            body = b"hello"
            out += method(1, 60, 40, b"\x00\x00" + shortstr("") + shortstr(name) + b"\x00")
            # content header: class 60, weight 0, size, flags: delivery-mode
            out += frame(2, 1, struct.pack(">HHQH", 60, 0, len(body), 0x1000) + b"\x02")
            out += frame(3, 1, body)
        sock.sendall(out)
        for k, _ in enumerate(names):
            (kind, _, payload), buf = read_frame(sock, buf)
            while kind == 8:  # a heartbeat: answer it and read on
                sock.sendall(frame(8, 0, b""))
                (kind, _, payload), buf = read_frame(sock, buf)
            cls, meth = struct.unpack(">HH", payload[:4])
            if (cls, meth) == (50, 11):
                taken += 1
            else:
                text = payload[7:7 + payload[6]].decode(errors="replace") if len(payload) > 7 else ""
                print(f"refused at queue {start + k}: class {cls} method {meth} {text!r}")
                sock.close()
                return taken
    sock.close()
    return taken


def status(pid):
    text = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) // 1024
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return threads, rss, fds


def start(binary, data):
    broker = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--http-listen", "127.0.0.1:0",
         "--amqp-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = broker.stdout.readline()
    amqp = int(re.search(r"amqp=[^ :]+:(\d+)", line).group(1))
    http = int(re.search(r"http=[^ :]+:(\d+)", line).group(1))
    return broker, amqp, http


def hold_connections(binary, pid, port, connections):
    bench = subprocess.Popen(
        [binary, "bench", "connections", "--url", f"amqp://guest:guest@127.0.0.1:{port}/%2f",
         "--count", str(connections), "--hold", "10", "--pid", str(pid), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    most = 0
    while bench.poll() is None:
        most = max(most, status(pid)[2])
        time.sleep(0.5)
    report = bench.stdout.read().strip()
    print(f"{connections} idle connections: broker fds at most {most}; bench: {report}")


def main():
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    data = tempfile.mkdtemp() + "/data"
    broker, port, _ = start(binary, data)
    try:
        before = status(broker.pid)
        began = time.time()
        taken = declare_and_publish(port, count)
        elapsed = time.time() - began
        time.sleep(3)
        threads, rss, fds = status(broker.pid)
        print(f"queues {taken}/{count} in {elapsed:.1f} s; empty broker: threads {before[0]}, "
              f"RSS {before[1]} MiB, fds {before[2]}; with the queues: threads {threads}, "
              f"RSS {rss} MiB, fds {fds}")
        if connections:
            hold_connections(binary, broker.pid, port, connections)
    finally:
        broker.terminate()
        broker.wait()
    broker, port, _ = start(binary, data)
    try:
        time.sleep(3)
        threads, rss, fds = status(broker.pid)
        print(f"after a restart: threads {threads}, RSS {rss} MiB, fds {fds}")
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    main()
