#!/usr/bin/env python3
"""What a scrape of weir's metrics costs with many queues and connections
(docs/benchmarks.md, "Metrics"; issue 22 asks for at most 250 ms and 1 MB for
`/metrics` with 10,000 queues and 1,000 connections).

    python3 scripts/metrics-cost.py WEIR_BINARY [QUEUES] [CONNECTIONS]

Starts the broker on free loopback ports with a temporary data directory, declares
QUEUES (default 10,000) durable queues with one message each over AMQP (as
scripts/many-queues.py does), holds CONNECTIONS (default 1,000) idle AMQP
connections (`weir bench connections`), then fetches `/metrics` and
`/metrics/per-object` five times each as guest and prints, per endpoint, the
fastest and slowest time and the size of the answer; the same for each dashboard
page (docs/dashboard.md; issue 22 asks for at most 300 ms with 10,000 queues). Then
it runs `weir bench amqp` (one producer with confirms, one consumer, 200,000
messages) eight times, alternating without and with a scraper that fetches both
endpoints every 5 seconds while an open Overview page reads its live event stream,
and prints the publish rates and their ratio.
"""
import base64
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

spec = importlib.util.spec_from_file_location(
    "many_queues", os.path.join(os.path.dirname(__file__), "many-queues.py"))
many_queues = importlib.util.module_from_spec(spec)
spec.loader.exec_module(many_queues)


def get(http, path):
    """The body of GET `path`, as guest."""
    request = urllib.request.Request(f"http://127.0.0.1:{http}{path}")
    login = base64.b64encode(b"guest:guest").decode()
    request.add_header("Authorization", f"Basic {login}")
    with urllib.request.urlopen(request) as answer:
        return answer.read()


def fetch(http, path):
    """How long GET `path` took, and its size."""
    began = time.perf_counter()
    body = get(http, path)
    return time.perf_counter() - began, len(body)


def publish_rate(binary, amqp, scrape, http):
    stop = threading.Event()

    def scraper():
        while not stop.is_set():
            fetch(http, "/metrics")
            fetch(http, "/metrics/per-object")
            stop.wait(5)

    def dashboard():
        # An open Overview: its live panel's event stream, one event a second.
        request = urllib.request.Request(f"http://127.0.0.1:{http}/ui/live/overview")
        login = base64.b64encode(b"guest:guest").decode()
        request.add_header("Authorization", f"Basic {login}")
        with urllib.request.urlopen(request) as events:
            while not stop.is_set():
                events.readline()

    threads = [threading.Thread(target=scraper), threading.Thread(target=dashboard)] \
        if scrape else []
    for thread in threads:
        thread.start()
    out = subprocess.run(
        [binary, "bench", "amqp", "--url", f"amqp://guest:guest@127.0.0.1:{amqp}/%2f",
         "--count", "200000", "--queue", "metrics-cost", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"weir bench amqp failed: {out.stderr}")
    stop.set()
    for thread in threads:
        thread.join()
    return float(re.search(r'"publish_msgs_per_sec":\s*([0-9.]+)', out.stdout).group(1))


def main():
    binary = sys.argv[1]
    queues = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000
    data = tempfile.mkdtemp() + "/data"
    broker, amqp, http = many_queues.start(binary, data)
    bench = None
    try:
        # One fewer: the benchmark's queue makes QUEUES (the default limit is 10,000).
        taken = many_queues.declare_and_publish(amqp, queues - 1)
        publish_rate(binary, amqp, False, http)
        bench = subprocess.Popen(
            [binary, "bench", "connections", "--url",
             f"amqp://guest:guest@127.0.0.1:{amqp}/%2f", "--count", str(connections),
             "--hold", "60", "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until the broker counts them all.
        deadline = time.time() + 60
        while time.time() < deadline:
            text = get(http, "/metrics").decode()
            open_now = re.search(r'^weir_connections\{protocol="amqp"\} (\d+)', text, re.M)
            if open_now and int(open_now.group(1)) >= connections:
                break
            time.sleep(0.5)
        print(f"{taken + 1} queues, {open_now.group(1) if open_now else '?'} AMQP connections")
        for path in ["/metrics", "/metrics/per-object"]:
            runs = [fetch(http, path) for _ in range(5)]
            times = sorted(t for t, _ in runs)
            print(f"{path}: {times[0] * 1000:.1f} - {times[-1] * 1000:.1f} ms, "
                  f"{runs[-1][1]} bytes")
        for path in ["/", "/ui/queues", "/ui/queues?sort=ready&dir=desc&page=50",
                     "/ui/queues/%2F/metrics-cost", "/ui/dead-letters", "/ui/connections"]:
            runs = [fetch(http, path) for _ in range(5)]
            times = sorted(t for t, _ in runs)
            print(f"dashboard {path}: {times[0] * 1000:.1f} - {times[-1] * 1000:.1f} ms, "
                  f"{runs[-1][1]} bytes")
        without, scraped = [], []
        for _ in range(4):
            without.append(publish_rate(binary, amqp, False, http))
            scraped.append(publish_rate(binary, amqp, True, http))
        ratio = sum(scraped) / sum(without)
        print(f"weir bench amqp publish msg/s without scrapes {without}, with a 5 s "
              f"scrape of both endpoints and an open Overview {scraped}: {ratio:.3f}")
    finally:
        if bench:
            bench.terminate()
            bench.wait()
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    main()
