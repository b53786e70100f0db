"""Faults: malformed and hostile input (issue 17), and their schedule.

AMQP: bad frame ends, oversized frames, random bytes, bad protocol headers, 25,000-deep
field tables (start-ok, headers, queue arguments), a consumer that never reads its
socket. HTTP: bad JSON, huge bodies and Content-Lengths, half-sent bodies, slowloris.
Each injection records what the broker answered and whether it survived; `hostile`
runs them, the cheap kinds every 1-3 s and the heavy ones at most once a period.
"""

import random
import socket
import struct
import time

from .history import now
from .http_helpers import http_request
from .rawamqp import (
    AmqpClosed, deep_array, longstr, method_payload, PROTOCOL_HEADER, RawAmqp, shortstr, table,
)
from .context import sleep_until
from .faults import Fault


def broker_survived(ctx, inc, wait=0.3):
    """True when the incarnation that was hit is still running a moment later; None
    when the campaign's own kill -9 ended it meanwhile (the fault is then not judged)."""
    time.sleep(wait)
    b = ctx.broker
    if inc in b.killed:
        return None
    return b.inc == inc and b.alive()


def inject_amqp_bad_frame_end(ctx):
    f = Fault(ctx, "amqp_bad_frame_end")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.send(PROTOCOL_HEADER)
        c.expect_method(10, 10)
        start_ok = method_payload(10, 11, table([]) + shortstr("PLAIN") + longstr(b"\0guest\0guest") + shortstr("en_US"))
        c.send(struct.pack(">BHI", 1, 0, len(start_ok)) + start_ok + b"\x00")
        got = c.read_close_code()
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc)
    f.done(outcome_text(got, alive), expected=alive and got[:2] == ("close", 501), answer=list(got), survived=alive)


def inject_amqp_oversized_frame(ctx):
    f = Fault(ctx, "amqp_oversized_frame")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.send(PROTOCOL_HEADER)
        c.expect_method(10, 10)
        c.send(struct.pack(">BHI", 1, 0, 0x7FFFFFF0) + b"\x00" * 64)
        got = c.read_close_code()
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc)
    f.done(outcome_text(got, alive), expected=alive and got[:2] == ("close", 501), answer=list(got), survived=alive)


def inject_amqp_random_bytes(ctx, rng):
    f = Fault(ctx, "amqp_random_bytes")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.send(PROTOCOL_HEADER)
        c.expect_method(10, 10)
        c.send(rng.randbytes(rng.randint(1, 4096)))
        got = c.read_close_code()
    except OSError as e:
        got = ("error", type(e).__name__)
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc)
    # Random bytes are a bad frame (501/502/505) or wait for more bytes (timeout).
    f.done(outcome_text(got, alive), expected=alive, answer=list(got), survived=alive)


def inject_amqp_bad_header(ctx, rng):
    f = Fault(ctx, "amqp_bad_protocol_header")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.send(b"HTTP" + rng.randbytes(4))
        got = c.read_close_code()
    except OSError as e:
        got = ("error", type(e).__name__)
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc)
    f.done(outcome_text(got, alive), expected=alive and got[0] == "protocol-header", answer=list(got), survived=alive)


def inject_amqp_deep_start_ok(ctx, depth):
    """The frame of issue 17: connection.start-ok whose client_properties hold an array
    nested `depth` deep. Expected: connection.close 502, the broker carries on."""
    f = Fault(ctx, "amqp_deep_start_ok")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.send(PROTOCOL_HEADER)
        c.expect_method(10, 10)
        props = table([("deep", deep_array(depth))])
        c.send_method(0, 10, 11, props + shortstr("PLAIN") + longstr(b"\0guest\0guest") + shortstr("en_US"))
        got = c.read_close_code()
    except OSError as e:
        got = ("error", type(e).__name__)
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc, wait=0.5)
    f.done(outcome_text(got, alive), expected=alive and got[:2] == ("close", 502), answer=list(got),
           survived=alive, depth=depth)


def inject_amqp_deep_header(ctx, depth):
    """After login: a publish whose content header's `headers` hold an array nested
    `depth` deep (unroutable, so nothing is stored). Expected: channel.close 406 (or
    connection.close 502), the broker carries on."""
    f = Fault(ctx, "amqp_deep_headers")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.handshake()
        c.channel_open()
        headers = table([("deep", deep_array(depth))])
        c.publish("", "soak.nowhere", headers, b"deep", prop_flags=0x2000)
        got = c.read_close_code()
    except (OSError, AmqpClosed) as e:
        got = ("error", type(e).__name__)
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc, wait=0.5)
    ok = alive and (got[:3] == ("close", 406, "channel") or got[:3] == ("close", 502, "connection"))
    f.done(outcome_text(got, alive), expected=ok, answer=list(got), survived=alive, depth=depth)


def inject_amqp_deep_arguments(ctx, depth):
    """queue.declare whose arguments hold an array nested `depth` deep."""
    f = Fault(ctx, "amqp_deep_arguments")
    c = RawAmqp(ctx.broker.amqp)
    try:
        c.handshake()
        c.channel_open()
        args = table([("x-soak", deep_array(depth))])
        c.send_method(1, 50, 10, struct.pack(">H", 0) + shortstr("soak.junk.deep") + b"\x00" + args)
        got = c.read_close_code()
    except (OSError, AmqpClosed) as e:
        got = ("error", type(e).__name__)
    finally:
        c.close()
    alive = broker_survived(ctx, f.inc, wait=0.5)
    ok = alive and got[0] == "close" and got[1] in (406, 502)
    f.done(outcome_text(got, alive), expected=ok, answer=list(got), survived=alive, depth=depth)


def outcome_text(got, alive):
    s = " ".join(str(x) for x in got)
    return s + ("" if alive else "; broker gone")


def inject_http_bad_json(ctx, rng):
    f = Fault(ctx, "http_bad_json")
    bodies = [b'{"body": ', b'{"messages": [{"body": 1}]}', b"\xff\xfe garbage", b'{"body":"x","headers":' + b"[" * 5000]
    body = rng.choice(bodies)
    try:
        status, answer, _ = http_request(ctx.broker.http, "POST", "/api/queues/soak.work/messages", body, timeout=5)
        got = f"{status} {(answer or {}).get('error')}"
        ok = status == 400 or (status == 503 and (answer or {}).get("error") == "resource_alarm")
    except Exception as e:
        got, ok = type(e).__name__, False
    alive = broker_survived(ctx, f.inc, wait=0.1)
    f.done(got, expected=ok and alive, survived=alive)


def inject_http_huge_body(ctx, mib):
    """Python's http.client sends a body over [http] max_body_bytes: it must be able to
    read the 413 (issue 17: weir closes with the body unread, BrokenPipeError)."""
    f = Fault(ctx, "http_huge_body")
    body = b'{"body": "' + b"x" * (mib << 20) + b'"}'
    try:
        status, answer, _ = http_request(ctx.broker.http, "POST", "/api/queues/soak.work/messages", body, timeout=20)
        got = f"{status} {(answer or {}).get('error')}"
        # 503 resource_alarm: a disk alarm was up, refused before the size.
        ok = status == 413 or (status == 503 and (answer or {}).get("error") == "resource_alarm")
    except Exception as e:
        got, ok = type(e).__name__, False
    del body
    alive = broker_survived(ctx, f.inc, wait=0.1)
    f.done(got, expected=ok and alive, survived=alive, mib=mib)


def inject_http_huge_content_length(ctx):
    """A Content-Length of 1 GiB, then nothing: the 413 should come before the body."""
    f = Fault(ctx, "http_huge_content_length")
    got, ok = None, False
    t0 = time.monotonic()
    try:
        s = socket.create_connection(ctx.broker.http, timeout=5)
        try:
            s.sendall(b"POST /api/queues/soak.work/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{")
            data = s.recv(4096)
            got = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed without an answer"
            status_line = data.split(b"\r\n", 1)[0] + b" "
            ok = b" 413 " in status_line or (b" 503 " in status_line and b"resource_alarm" in data)
        finally:
            s.close()
    except Exception as e:
        got = type(e).__name__
    alive = broker_survived(ctx, f.inc, wait=0.1)
    f.done(f"{got} after {time.monotonic() - t0:.1f} s", expected=ok and alive, survived=alive)


def inject_http_half_body(ctx, hold):
    """Headers say 100,000 bytes, 100 come, then nothing for `hold` seconds."""
    f = Fault(ctx, "http_half_body")
    t0 = time.monotonic()
    got = "held open until the campaign closed it"
    closed_by_broker = False
    try:
        s = socket.create_connection(ctx.broker.http, timeout=5)
        try:
            s.sendall(b"POST /api/queues/soak.work/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b"{" + b" " * 99)
            s.settimeout(hold)
            try:
                data = s.recv(4096)
                closed_by_broker = True
                got = (data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed") + \
                    f" after {time.monotonic() - t0:.1f} s"
            except socket.timeout:
                pass
        finally:
            s.close()
    except Exception as e:
        got = type(e).__name__
    alive = broker_survived(ctx, f.inc, wait=0.1)
    # A body-read timeout shorter than `hold` closes it; the issue asks for one.
    f.done(got, expected=closed_by_broker and alive, survived=alive, hold_s=hold)


def inject_http_slowloris(ctx, sockets, hold):
    """`sockets` connections each send a request line and one header, then nothing, for
    `hold` seconds; meanwhile a fresh /healthz must be answered."""
    f = Fault(ctx, "http_slowloris")
    held = []
    try:
        for _ in range(sockets):
            try:
                s = socket.create_connection(ctx.broker.http, timeout=2)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
                held.append(s)
            except OSError:
                break
        worst, failed, probes_n = 0.0, 0, 0
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline and not ctx.stop_faults.is_set():
            t0 = time.monotonic()
            try:
                status, _, _ = http_request(ctx.broker.http, "GET", "/healthz", timeout=ctx.args.probe_timeout)
                if status != 200:
                    failed += 1
            except Exception:
                failed += 1
            worst = max(worst, time.monotonic() - t0)
            probes_n += 1
            time.sleep(0.25)
        closed = 0
        for s in held:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
    finally:
        for s in held:
            s.close()
    alive = broker_survived(ctx, f.inc, wait=0.1)
    f.done(f"{len(held)} half-sent requests for {hold:.0f} s: {failed}/{probes_n} healthz probes failed "
           f"(slowest {worst:.2f} s), {closed} closed by the broker",
           expected=failed == 0 and alive, survived=alive, opened=len(held), probes_failed=failed,
           probes=probes_n, worst_s=round(worst, 3), closed_by_broker=closed)


def inject_slow_consumer(ctx, backlog, hold):
    """A consumer with auto-ack that never reads its socket, on a backlog of `backlog`
    1 KiB messages: the broker's RSS must stay bounded (issue 17's third case)."""
    f = Fault(ctx, "amqp_slow_consumer")
    queue = "soak.slow"
    # Top the backlog up (HTTP batches of 500 x 1 KiB; not tracked one by one).
    sent = 0
    try:
        status, info, _ = http_request(ctx.broker.http, "GET", f"/api/queues/{queue}", timeout=5)
        ready = (info or {}).get("stats", {}).get("ready", 0) if status == 200 else 0
        need = max(0, backlog - ready)
        payload = "y" * 1000
        while sent < need and not ctx.stop_faults.is_set():
            n = min(500, need - sent)
            body = {"messages": [{"body": payload} for _ in range(n)]}
            status, _, _ = http_request(ctx.broker.http, "POST", f"/api/queues/{queue}/messages", body, timeout=20)
            if status != 201:
                break
            sent += n
        ready += sent
    except Exception as e:
        f.done(f"could not fill the backlog: {type(e).__name__}", expected=True, skipped=True)
        return
    if ready < backlog // 2:
        f.done(f"backlog not filled ({ready} of {backlog}: sends refused)", expected=True, skipped=True, backlog=ready)
        return
    base = ctx.broker.rss_kib() or 0
    peak = base
    c = None
    try:
        c = RawAmqp(ctx.broker.amqp)
        c.handshake(heartbeat=0)
        c.channel_open()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.consume(queue, no_ack=True)
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline and not ctx.stop_faults.is_set():
            kib = ctx.broker.rss_kib()
            if kib is not None and ctx.broker.inc == f.inc:
                peak = max(peak, kib)
            time.sleep(0.2)
    except Exception as e:
        f.done(f"consumer failed: {type(e).__name__}", expected=True, skipped=True)
        if c:
            c.abort()
        return
    c.abort()
    alive = broker_survived(ctx, f.inc, wait=0.1)
    limit = ctx.args.rss_limit_mib * 1024
    f.done(f"backlog {ready}, RSS {base // 1024} -> peak {peak // 1024} MiB in {hold:.0f} s",
           expected=alive and peak <= limit, survived=alive, backlog=ready, rss_base_kib=base,
           rss_peak_kib=peak, rss_limit_kib=limit)


def hostile(ctx):
    """Malformed and hostile input on a schedule. The cheap kinds come every 1-3 s; the
    heavy ones at most once per their period."""
    args = ctx.args
    rng = random.Random(args.seed + 2)
    q = args.quick
    heavy = {
        # kind: (period s, function)
        "amqp_deep_start_ok": (20, lambda: inject_amqp_deep_start_ok(ctx, 25000)),
        "amqp_deep_headers": (25, lambda: inject_amqp_deep_header(ctx, 25000)),
        "amqp_deep_arguments": (30, lambda: inject_amqp_deep_arguments(ctx, 25000)),
        "http_huge_body": (40, lambda: inject_http_huge_body(ctx, 20 if q else 64)),
        "http_huge_content_length": (40, lambda: inject_http_huge_content_length(ctx)),
        "http_half_body": (45, lambda: inject_http_half_body(ctx, args.half_body_hold)),
        "http_slowloris": (90, lambda: inject_http_slowloris(ctx, 100 if q else 1100, 3 if q else 15)),
        "amqp_slow_consumer": (90, lambda: inject_slow_consumer(ctx, 5000 if q else args.slow_backlog, 3 if q else 10)),
    }
    cheap = [
        lambda: inject_amqp_bad_frame_end(ctx),
        lambda: inject_amqp_oversized_frame(ctx),
        lambda: inject_amqp_random_bytes(ctx, rng),
        lambda: inject_amqp_bad_header(ctx, rng),
        lambda: inject_http_bad_json(ctx, rng),
    ]
    # Spread the heavy kinds' first runs over the first period.
    due = {k: now() + rng.uniform(2, min(p, 10 if q else p)) for k, (p, _) in heavy.items()}
    disabled = set(args.skip_fault or [])
    while not ctx.stop_faults.is_set():
        if sleep_until(ctx.stop_faults, rng.uniform(1, 3)):
            break
        if not ctx.wait_up(0.1):
            continue
        t = now()
        ready_heavy = [k for k, d in due.items() if d <= t and k not in disabled]
        try:
            with ctx.hold_kills():
                if ready_heavy:
                    k = rng.choice(ready_heavy)
                    due[k] = t + heavy[k][0] * rng.uniform(0.8, 1.2)
                    heavy[k][1]()
                else:
                    rng.choice(cheap)()
        except Exception as e:
            # The broker went down under the injection (a kill): not the fault's doing.
            ctx.hist("fault_error", err=f"{type(e).__name__}: {e}")
