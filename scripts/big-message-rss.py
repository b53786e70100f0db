#!/usr/bin/env python3
"""Peak RSS of a weir broker for one large message published with confirms and then
got, over pika (docs/benchmarks.md, "One large message").

    ~/.cache/weir-venv/bin/python scripts/big-message-rss.py WEIR_BINARY [MIB]

Starts the broker on free loopback ports with a temporary data directory, publishes
MIB (default 100) MiB persistent, gets it back, checks it byte for byte and prints the
broker's resident memory (VmRSS before, VmHWM after publishing and after consuming).
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import pika


def main():
    binary = sys.argv[1]
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 100) << 20
    data = tempfile.mkdtemp()
    broker = subprocess.Popen(
        [binary, "serve", "--data-dir", data + "/data", "--http-listen", "127.0.0.1:0",
         "--amqp-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r"amqp=[^ :]+:(\d+)", broker.stdout.readline()).group(1))

        def rss(field):
            with open(f"/proc/{broker.pid}/status") as status:
                for line in status:
                    if line.startswith(field):
                        return int(line.split()[1]) // 1024
            return -1

        base = rss("VmRSS:")
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("big", durable=True)
        body = os.urandom(1 << 20) * (size >> 20)
        started = time.time()
        channel.basic_publish("", "big", body, pika.BasicProperties(delivery_mode=2))
        publish_s = time.time() - started
        after_publish = rss("VmHWM:")
        started = time.time()
        method, _, got = channel.basic_get("big", auto_ack=False)
        assert got == body, "the body came back different"
        channel.basic_ack(method.delivery_tag)
        get_s = time.time() - started
        print(f"message {size >> 20} MiB: rss before {base} MiB, peak after publish "
              f"{after_publish} MiB, peak after get {rss('VmHWM:')} MiB "
              f"(publish {publish_s:.2f} s, get {get_s:.2f} s)")
        connection.close()
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    main()
