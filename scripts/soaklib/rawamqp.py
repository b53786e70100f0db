"""A raw AMQP 0-9-1 client: for hostile input, and for consumers that crash or stall.

pika cannot drop a socket without a close handshake, nor stop reading it, nor send a
malformed frame; this client builds frames by hand (field tables, 25,000-deep arrays
included) and reads the broker's answers with a deadline.
"""

import socket
import struct
import time


FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def table(entries):
    """A field table from (name, encoded value with its type byte) pairs."""
    body = b"".join(shortstr(k) + v for k, v in entries)
    return struct.pack(">I", len(body)) + body


def deep_array(depth):
    """An array nested `depth` deep: 'A' + u32 length per level, built without copying."""
    return b"".join(b"A" + struct.pack(">I", 5 * (k - 1)) for k in range(depth, 0, -1))


def method_payload(cls, meth, args=b""):
    return struct.pack(">HH", cls, meth) + args


class AmqpClosed(Exception):
    def __init__(self, code, text, where):
        super().__init__(f"{where} closed {code} {text}")
        self.code = code
        self.text = text
        self.where = where


class RawAmqp:
    def __init__(self, addr, timeout=5.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""
        self.frame_max = 131072

    def send(self, data):
        self.sock.sendall(data)

    def frame(self, ftype, ch, payload):
        return struct.pack(">BHI", ftype, ch, len(payload)) + payload + FRAME_END

    def send_method(self, ch, cls, meth, args=b""):
        self.send(self.frame(1, ch, method_payload(cls, meth, args)))

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("read timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.buf += chunk

    def read_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        self._fill(7, deadline)
        if self.buf.startswith(b"AMQP"):
            self._fill(8, deadline)
            hdr, self.buf = self.buf[:8], self.buf[8:]
            return ("protocol-header", 0, hdr)
        ftype, ch, size = struct.unpack(">BHI", self.buf[:7])
        self._fill(7 + size + 1, deadline)
        payload = self.buf[7:7 + size]
        end = self.buf[7 + size:8 + size]
        self.buf = self.buf[8 + size:]
        if end != FRAME_END:
            raise ConnectionError("bad frame end from the broker")
        return (ftype, ch, payload)

    def expect_method(self, cls, meth, timeout=5.0):
        """Reads frames until the method (cls, meth); a close raises AmqpClosed."""
        deadline = time.monotonic() + timeout
        while True:
            ftype, ch, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
            if ftype != 1:
                continue
            c, m = struct.unpack(">HH", payload[:4])
            if (c, m) == (cls, meth):
                return payload[4:]
            self._raise_if_close(ch, c, m, payload[4:])

    def _raise_if_close(self, ch, c, m, args):
        if (c, m) in ((10, 50), (20, 40)):
            code = struct.unpack(">H", args[:2])[0]
            tl = args[2]
            text = args[3:3 + tl].decode("utf-8", "replace")
            if (c, m) == (20, 40):
                try:  # channel.close-ok, so the connection goes on
                    self.send_method(ch, 20, 41)
                except OSError:
                    pass
            raise AmqpClosed(code, text, "connection" if c == 10 else "channel")

    def handshake(self, client_properties=None, heartbeat=0):
        self.send(PROTOCOL_HEADER)
        self.expect_method(10, 10)
        props = client_properties if client_properties is not None else table(
            [("product", b"S" + longstr("weir-soak"))])
        self.send_method(0, 10, 11, props + shortstr("PLAIN") + longstr(b"\0guest\0guest") + shortstr("en_US"))
        tune = self.expect_method(10, 30)
        channel_max, frame_max, _hb = struct.unpack(">HIH", tune[:8])
        self.frame_max = frame_max or 131072
        self.send_method(0, 10, 31, struct.pack(">HIH", channel_max, self.frame_max, heartbeat))
        self.send_method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00")
        self.expect_method(10, 41)

    def channel_open(self, ch=1):
        self.send_method(ch, 20, 10, shortstr(""))
        self.expect_method(20, 11)

    def qos(self, prefetch, ch=1):
        self.send_method(ch, 60, 10, struct.pack(">IHB", 0, prefetch, 0))
        self.expect_method(60, 11)

    def consume(self, queue, no_ack, ch=1):
        flags = 0x02 if no_ack else 0
        self.send_method(ch, 60, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr("") + bytes([flags]) + table([]))
        self.expect_method(60, 21)

    def ack(self, tag, ch=1):
        self.send_method(ch, 60, 80, struct.pack(">QB", tag, 0))

    def publish(self, exchange, routing_key, header_props, body, ch=1, flags=0, prop_flags=0):
        """basic.publish, a content header with the given encoded properties, the body."""
        out = self.frame(1, ch, method_payload(60, 40, struct.pack(">H", 0) + shortstr(exchange) + shortstr(routing_key) + b"\x00"))
        hdr = struct.pack(">HHQH", 60, 0, len(body), prop_flags) + header_props
        out += self.frame(2, ch, hdr)
        if body:
            out += self.frame(3, ch, body)
        self.send(out)

    def read_delivery(self, timeout):
        """The next basic.deliver as (tag, redelivered, body); None on timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                ftype, ch, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
                if ftype != 1:
                    continue
                c, m = struct.unpack(">HH", payload[:4])
                args = payload[4:]
                if (c, m) != (60, 60):
                    self._raise_if_close(ch, c, m, args)
                    continue
                i = 1 + args[0]  # consumer tag
                tag, redelivered = struct.unpack(">QB", args[i:i + 9])
                # content header, then body frames
                ftype, _, hdr = self.read_frame(max(0.01, deadline - time.monotonic()) + 5)
                size = struct.unpack(">Q", hdr[4:12])[0]
                body = b""
                while len(body) < size:
                    ftype, _, part = self.read_frame(max(0.01, deadline - time.monotonic()) + 5)
                    body += part
                return tag, bool(redelivered & 1), body
        except socket.timeout:
            return None

    def abort(self):
        """Drops the connection with a reset: no close handshake, nothing acked."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def read_close_code(self, timeout=3.0):
        """What the broker answered: ('close', code, where), ('header', ...), ('eof',),
        ('timeout',)."""
        try:
            deadline = time.monotonic() + timeout
            while True:
                ftype, ch, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
                if ftype == "protocol-header":
                    return ("protocol-header",)
                if ftype == 1:
                    c, m = struct.unpack(">HH", payload[:4])
                    try:
                        self._raise_if_close(ch, c, m, payload[4:])
                    except AmqpClosed as e:
                        return ("close", e.code, e.where)
        except socket.timeout:
            return ("timeout",)
        except (ConnectionError, OSError):
            return ("eof",)
