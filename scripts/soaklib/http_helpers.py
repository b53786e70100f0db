"""One HTTP request to the broker's API (standard library only).

Kept apart because every part of the campaign uses it: the HTTP load, the probes, the
hostile inputs, the topology set-up and the final drain.
"""

import base64
import http.client
import json

# The user a fresh broker has (loopback only); every endpoint but /healthz needs a login.
AUTHORIZATION = "Basic " + base64.b64encode(b"guest:guest").decode()


def http_request(addr, method, path, body=None, timeout=10.0, conn=None):
    """One request; returns (status, parsed JSON or None, the connection to reuse or
    None). A caller that drops the connection closes it (reference counting)."""
    if conn is None:
        conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        data = None
        headers = {"Authorization": AUTHORIZATION}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            return resp.status, parsed, None
        return resp.status, parsed, conn
    except BaseException:
        conn.close()
        raise
