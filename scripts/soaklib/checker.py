"""The history checker: `check(path)` turns a history.jsonl into a report.

It reads only the history (and the campaign's own record of its arguments and
topology), so `--check-only` can judge a saved run again. The rules are in check()'s
docstring and docs/reliability.md; violations matching a defect issue 17 reported are
labelled "known open" (they still count).
"""

import bisect
import collections
import json
import re

from .topology import DEAD_LETTER, QUEUES, UNTRACKED


# Defects issue 17 reported, being fixed while this campaign was written. A violation
# that matches one is labelled "known open" in the summary (it still counts).
KNOWN_OPEN = {
    "crash:stack overflow": "issue 17: nested field tables overflow the stack (start-ok, headers, arguments)",
    "fault:amqp_deep_start_ok": "issue 17: nested field tables overflow the stack",
    "fault:amqp_deep_headers": "issue 17: nested field tables overflow the stack",
    "fault:amqp_deep_arguments": "issue 17: nested field tables overflow the stack",
    "fault:http_slowloris": "issue 17: no HTTP header-read timeout (1,024 half-sent requests lock the API out)",
    "fault:http_half_body": "issue 17: no HTTP body-read timeout",
    "fault:http_huge_body": "issue 17: the 413 is sent with the body unread (BrokenPipeError in Python clients)",
    "fault:http_huge_content_length": "issue 17: the 413 should come before the body is read",
    "fault:amqp_slow_consumer": "issue 17: deliveries are not under a byte credit (RSS grows with the backlog)",
    "unavailable:http_slowloris": "issue 17: no HTTP header-read timeout",
}


def fatal_lines(log):
    """The lines of a broker log that say why it stopped: a panic or abort if there is
    one, else its last errors."""
    lines = log.splitlines()
    keep = [ln.strip() for ln in lines if re.search(r"panick|overflow|fatal|abort|memory allocation|Error:", ln)]
    if not keep:
        keep = [ln.strip() for ln in lines if " ERROR " in ln]
    return " | ".join(keep[-3:])[-600:]


def load_history(path):
    events = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill of the campaign itself
    return events


# An ack refused with one of these was kept by the broker, which writes it once the disk
# has room (docs/http-api.md): the message may be settled although the answer says not.
KEPT_ACK_CODES = ("storage_full", "storage_error")


def ack_may_settle(e):
    """Whether an ack event may have settled its message."""
    return e.get("out") != "failed" or e.get("code") in KEPT_ACK_CODES


def check(path):
    """Checks a history. Returns a report dict (violations grouped by kind, examples,
    figures). The rules:

    * lost: a confirmed publish (AMQP confirm, HTTP 201) must, in every queue it was
      routed to, be settled: acked by a consumer (any ack whose outcome is not a refusal;
      an ack whose answer was cut off counts, and so does an HTTP ack refused with a
      storage error: the broker keeps such an ack and writes it once it can,
      docs/http-api.md) or taken by the final drain. A queue with a dead-letter queue
      may have settled it there instead.
    * ack durability: a delivery of (queue, id) that starts after an ack of it was
      answered as durable. HTTP: after the 200 of /ack. AMQP: after the ack was sent plus
      --amqp-ack-window, when the broker incarnation and the client's connection both
      lasted past that.
    * unknown / misrouted: a delivered id that was never published, or in a queue it
      was not routed to (or that queue's dead-letter queue).
    * refused but present: an HTTP send answered 4xx/5xx (did not take effect) whose id
      turned up anyway.
    * order: per consumer stream (an AMQP connection; an HTTP consumer within one broker
      incarnation; the drain), first deliveries (not redelivered) of one producer's
      confirmed messages come in publish order (docs/http-api.md "Order and priorities").
      Message groups: a message is never delivered before the previous confirmed message
      of its group had an ack sent ("Message groups").
    * unavailable: an HTTP or AMQP probe that failed outside the windows in which the
      broker was down (kill to ready line).
    * crash: the broker exited without being killed by the campaign.
    * restart failed: a restart did not print its ready line within 60 s.
    * fault expectation: an injected fault was not answered as issue 17 asks (the
      answers are listed per kind).
    """
    ev = load_history(path)
    rep = {"violations": collections.defaultdict(list), "figures": {}, "faults": {}}
    V = rep["violations"]
    F = rep["figures"]
    campaign = next((e for e in ev if e["ev"] == "campaign"), {})
    cargs = campaign.get("args", {})
    window = float(cargs.get("amqp_ack_window", 0.1))
    # After a disk fault ends, the broker gets this long to write again (its disk
    # check runs every second).
    args_grace = 3.0
    dead_letter = campaign.get("dead_letter", DEAD_LETTER)
    untracked = set(campaign.get("untracked", UNTRACKED))
    rep["campaign"] = {k: cargs.get(k) for k in ("duration", "seed", "quick", "rate", "kill_min", "kill_max", "disk_mib")}
    rep["campaign"]["disk_fault"] = campaign.get("disk")
    rep["campaign"]["build"] = campaign.get("build")
    if any(e["ev"] == "campaign_error" for e in ev):
        rep["campaign_error"] = [e["err"] for e in ev if e["ev"] == "campaign_error"]

    # ---- incarnations and down windows
    spawn, ready, end, end_kind = {}, {}, {}, {}
    for e in ev:
        k = e["ev"]
        if k == "inc_spawn":
            spawn[e["i"]] = e["t"]
        elif k == "inc_ready":
            ready[e["i"]] = e["t"]
        elif k == "inc_kill":
            end[e["i"]] = e["t"]
            end_kind[e["i"]] = e["why"]
        elif k == "inc_exit":
            # Exit noticed within 50 ms of it; the crash itself is the violation.
            end[e["i"]] = e["t"] - 0.5
            end_kind[e["i"]] = "exit"
            V["crash"].append({"t": e["t"], "incarnation": e["i"], "rc": e["rc"], "reason": fatal_lines(e.get("log", "")),
                               "log_tail": e.get("log", "")[-1500:]})
        elif k == "inc_start_failed":
            end[e["i"]] = e["t"]
            end_kind[e["i"]] = "start_failed"
            V["restart_failed"].append({"t": e["t"], "incarnation": e["i"], "rc": e.get("rc"), "reason": fatal_lines(e.get("log", "")),
                                        "log_tail": e.get("log", "")[-1500:]})
    disk_fills = [(e["ts"], e["te"], e["kind"]) for e in ev if e["ev"] == "fault" and e["kind"].startswith("disk")]
    for it in V["restart_failed"]:
        it["disk_filled"] = [k for a, b, k in disk_fills if a <= it["t"] <= b + 1]
    incs = sorted(spawn)
    spawn_times = [spawn[i] for i in incs]
    INF = float("inf")

    def inc_at(t):
        k = bisect.bisect_right(spawn_times, t) - 1
        return incs[k] if k >= 0 else None

    down = []  # (start, end): from the end of one incarnation to the next one's ready line
    for i in incs:
        if i in end:
            nxt = [j for j in incs if j > i and j in ready]
            down.append((end[i], ready[nxt[0]] if nxt else INF))
    down.sort()
    restarts = [ready[i] - spawn[i] for i in incs if i in ready and i > 0]
    F["broker_incarnations"] = len(incs)
    F["kills"] = sum(1 for v in end_kind.values() if v in ("schedule",))
    F["restart_s_mean"] = round(sum(restarts) / len(restarts), 3) if restarts else None
    F["restart_s_max"] = round(max(restarts), 3) if restarts else None
    F["down_windows"] = len(down)
    F["down_s_total"] = round(sum(min(b, 1e9) - a for a, b in down if b != INF), 2)

    # ---- faults
    faults = [e for e in ev if e["ev"] == "fault"]
    fault_windows = [(e["ts"], e["te"], e["kind"]) for e in faults]
    per_kind = collections.OrderedDict()
    for e in faults:
        d = per_kind.setdefault(e["kind"], {"injected": 0, "as_expected": 0, "outcomes": collections.Counter()})
        d["injected"] += 1
        d["as_expected"] += 1 if e.get("expected", True) else 0
        d["outcomes"][e["outcome"] if len(e["outcome"]) < 90 else e["outcome"][:87] + "..."] += 1
        if not e.get("expected", True):
            V[f"fault:{e['kind']}"].append({"t": e["ts"], "outcome": e["outcome"], "incarnation": e.get("inc")})
    per_kind_out = {}
    kill_counts = collections.Counter(end_kind.values())
    per_kind_out["kill9"] = {"injected": kill_counts.get("schedule", 0), "as_expected": None,
                             "outcomes": {"killed and restarted": kill_counts.get("schedule", 0)}}
    for k, d in per_kind.items():
        per_kind_out[k] = {"injected": d["injected"], "as_expected": d["as_expected"],
                           "outcomes": dict(d["outcomes"].most_common(6))}
    crashes = [e for e in ev if e["ev"] == "crash"]
    stalls = [e for e in ev if e["ev"] == "stall"]
    drops = [e for e in ev if e["ev"] == "drop"]
    per_kind_out["consumer_crash (load)"] = {"injected": len(crashes) - len(stalls), "as_expected": None,
                                             "outcomes": {"deliveries held when dropped": sum(len(e["held"]) for e in crashes) - sum(e["held"] for e in stalls)}}
    per_kind_out["consumer_stall (load)"] = {"injected": len(stalls), "as_expected": None,
                                             "outcomes": {"deliveries held while stalled": sum(e["held"] for e in stalls)}}
    per_kind_out["http_lease_dropped (load)"] = {"injected": len(drops), "as_expected": None,
                                                 "outcomes": {"leases left to expire": sum(e["n"] for e in drops)}}
    rep["faults"] = per_kind_out

    def faults_at(t, before=1.0, after=3.0):
        names = sorted({k for a, b, k in fault_windows if a - before <= t <= b + after})
        for a, b in down:
            if a - 0.05 <= t <= a + 1.0:
                names.append("kill9/exit")
                break
        return names

    for it in V["crash"]:
        it["faults_just_before"] = faults_at(it["t"], 0.0, 3.0)

    # ---- publishes
    pub = {}      # id -> event
    state = {}    # id -> confirmed | nacked | unknown | refused
    routed = {}
    for e in ev:
        k = e["ev"]
        if k == "pub":
            pub[e["id"]] = e
            state[e["id"]] = "pending"
        elif k == "conf":
            state[e["id"]] = "confirmed"
            if "routed" in e:
                routed[e["id"]] = e["routed"]
        elif k == "pub_nack":
            state[e["id"]] = "nacked"
        elif k == "pub_unknown":
            state[e["id"]] = "unknown"
        elif k == "pub_refused":
            state[e["id"]] = f"refused {e['status']}"
        elif k == "pub_unroutable":
            state[e["id"]] = "unroutable"
    st_count = collections.Counter(s if not s.startswith("refused") else s for s in state.values())
    F["published"] = len(pub)
    F["published_by"] = dict(collections.Counter(p["via"] for p in pub.values()))
    F["confirmed"] = st_count.get("confirmed", 0)
    F["outcomes"] = dict(st_count)
    F["copies_expected"] = sum(len(pub[i]["q"]) for i, s in state.items() if s == "confirmed")
    for i, n in routed.items():
        if n != len(pub[i]["q"]):
            V["misrouted_answer"].append({"id": i, "routed": n, "expected": pub[i]["q"]})

    # ---- deliveries and settlements
    conn_open = {}
    conn_end = {}
    for e in ev:
        if e["ev"] == "conn_open":
            conn_open[e["conn"]] = e["t"]
        elif e["ev"] in ("conn_lost", "conn_close", "crash"):
            conn_end.setdefault(e["conn"], e["t"])
    dlv = collections.defaultdict(list)        # (q, id) -> [delivery events]
    settled = set()                             # (q, id) acked (not refused) or drained
    durable_acks = collections.defaultdict(list)  # (q, id) -> [(time durable, ack event)]
    n_dlv = n_first = n_acks = n_nacks = n_rejects = 0
    unknown_ids = []
    misrouted = []
    allowed = {}
    for i, p in pub.items():
        qs = set(p["q"])
        for q in list(qs):
            if q in dead_letter:
                qs.add(dead_letter[q])
        allowed[i] = qs
    for e in ev:
        k = e["ev"]
        if k == "dlv":
            n_dlv += 1
            n_first += 1 if e["first"] else 0
            key = (e["q"], e["id"])
            dlv[key].append(e)
            if e["q"] in untracked:
                continue
            if e["id"] not in pub:
                unknown_ids.append({"q": e["q"], "id": e["id"], "t": e["t"], "consumer": e["c"]})
            elif e["q"] not in allowed[e["id"]]:
                misrouted.append({"q": e["q"], "id": e["id"], "t": e["t"], "routed_to": pub[e["id"]]["q"]})
        elif k == "ack":
            n_acks += 1
            key = (e["q"], e["id"])
            if ack_may_settle(e):
                settled.add(key)
            if e["via"] == "http" and e.get("out") == "ok":
                durable_acks[key].append((e["te"], e))
            elif e["via"] == "amqp":
                t_ack = e["t"]
                inc = inc_at(conn_open.get(e["c"], t_ack))
                inc_end = end.get(inc, INF)
                c_end = conn_end.get(e["c"], INF)
                if t_ack + window <= min(inc_end, c_end):
                    durable_acks[key].append((t_ack + window, e))
        elif k == "nack":
            n_nacks += 1
        elif k == "reject":
            n_rejects += 1
    F["deliveries"] = n_dlv
    F["deliveries_redelivered"] = n_dlv - n_first
    F["acks"] = n_acks
    F["nacks"] = n_nacks
    F["rejects"] = n_rejects
    F["drained"] = sum(1 for e in ev if e["ev"] == "dlv" and e["c"] == "drain")
    for u in unknown_ids:
        V["unknown_id"].append(u)
    for m in misrouted:
        V["misrouted"].append(m)

    # lost
    lost = 0
    for i, s in state.items():
        if s != "confirmed":
            continue
        for q in pub[i]["q"]:
            if q in untracked:
                continue
            if (q, i) in settled:
                continue
            dq = dead_letter.get(q)
            if dq and (dq, i) in settled:
                continue
            lost += 1
            seen = dlv.get((q, i), [])
            V["lost"].append({"id": i, "q": q, "published_at": pub[i]["t"], "deliveries": len(seen),
                              "last_delivery": seen[-1]["t"] if seen else None,
                              "faults_near_publish": faults_at(pub[i]["t"])})
    F["copies_lost"] = lost

    # refused but present
    for i, s in state.items():
        if s.startswith("refused"):
            for q in pub[i]["q"]:
                if dlv.get((q, i)):
                    V["refused_but_present"].append({"id": i, "q": q, "answer": s, "published_at": pub[i]["t"],
                                                     "faults_near_publish": faults_at(pub[i]["t"])})
    # refused while nothing was wrong: a storage refusal must have a disk fault near it
    disk_windows = [(a, b) for a, b, k in fault_windows if k.startswith("disk")]

    def disk_trouble(t, grace):
        return any(a - 0.5 <= t <= b + grace for a, b in disk_windows)

    for e in ev:
        k = e["ev"]
        bad = None
        if k == "pub_refused" and (e["status"] >= 500 or e["status"] == 429):
            bad = f"send {e['status']} {e.get('code')}"
        elif k == "pub_nack":
            bad = "publish nacked"
        elif k in ("ack", "nack") and e.get("out") == "failed" and e.get("code") in (
                "storage_error", "storage_full", "internal_error", "unavailable"):
            bad = f"{k} failed {e.get('code')}"
        if bad and not disk_trouble(e["t"], args_grace):
            last = V["refused_while_healthy"][-1] if V["refused_while_healthy"] else None
            if last and e["t"] <= last["until"] + 2.0:
                last["until"] = e["t"]
                last["refusals"][bad] = last["refusals"].get(bad, 0) + 1
                if len(last["example_ids"]) < 5:
                    last["example_ids"].append(e["id"])
            else:
                V["refused_while_healthy"].append({
                    "from": e["t"], "until": e["t"], "refusals": {bad: 1}, "example_ids": [e["id"]],
                    "since_last_disk_fault": round(min((e["t"] - b for a, b in disk_windows if b <= e["t"]), default=-1), 2),
                    "faults_near": faults_at(e["t"])})
    F["nacked_but_present"] = sum(1 for i, s in state.items() if s == "nacked" and any(dlv.get((q, i)) for q in pub[i]["q"]))

    # delivered after a durable ack. An AMQP ack gets no answer, so the broker cannot
    # tell the client that it could not write it: one sent while the disk was full (or
    # within the grace after) and followed by a redelivery is counted apart, as
    # "lost to the disk fault"; HTTP acks answered 200 have no such excuse.
    lost_to_disk = 0
    # A dead-letter queue may get a second copy of a message whose first copy was
    # acked there: when the source queue could not record the first dead-lettering
    # (it gets no answer either), the message comes back there and is rejected again.
    dlq_source = {d: q for q, d in dead_letter.items()}
    rejects = collections.defaultdict(list)
    for e in ev:
        if e["ev"] == "reject":
            rejects[(e["q"], e["id"])].append(e["t"])
    dead_lettered_again = 0
    for key, acks in durable_acks.items():
        acks.sort(key=lambda a: a[0])
        deliveries = dlv.get(key, [])
        if not deliveries:
            continue
        last_start = max(d.get("ts", d["t"]) for d in deliveries)
        for durable_at, ack_ev in acks:
            if last_start <= durable_at:
                break  # later acks are later still
            if ack_ev["via"] == "amqp" and disk_trouble(ack_ev["t"], args_grace):
                lost_to_disk += 1
                continue
            d = next(d for d in deliveries if d.get("ts", d["t"]) > durable_at)
            start = d.get("ts", d["t"])
            src = dlq_source.get(key[0])
            if src and any(durable_at - 0.5 <= t <= start for t in rejects.get((src, key[1]), [])):
                dead_lettered_again += 1
                continue
            V["delivered_after_durable_ack"].append({
                "q": key[0], "id": key[1], "ack_via": ack_ev["via"], "ack_at": ack_ev.get("te", ack_ev["t"]),
                "ack_consumer": ack_ev["c"], "delivered_at": start, "consumer": d["c"],
                "redelivered": not d["first"],
                "kills_between": sum(1 for a, b in down if ack_ev["t"] <= a <= start),
                "faults_near_ack": faults_at(ack_ev["t"], 1.0, 1.0)})
            break
    F["amqp_acks_lost_to_disk_fault"] = lost_to_disk
    F["dead_lettered_again_after_ack"] = dead_lettered_again
    # AMQP acks that did not stick, within the window: allowed, counted.
    durable_ids = {id(a[1]) for acks in durable_acks.values() for a in acks}
    last_dlv = {key: max(d["t"] for d in ds) for key, ds in dlv.items()}
    within_window = 0
    for e in ev:
        if e["ev"] == "ack" and e["via"] == "amqp" and id(e) not in durable_ids:
            if last_dlv.get((e["q"], e["id"]), -1) > e["t"]:
                within_window += 1
    F["amqp_acks_lost_within_window"] = within_window
    # a redelivery storm: one message delivered over and over
    # (one incident per queue and overlapping span, however many messages it held)
    storm_at = 50
    storms = []
    for key, ds in dlv.items():
        if len(ds) > storm_at:
            storms.append((key[0], ds[storm_at - 10]["t"], ds[-1]["t"], key[1], len(ds)))
    storms.sort()
    incidents = []
    for q, a, b, msg_id, n in storms:
        last = incidents[-1] if incidents else None
        if last and last["q"] == q and a <= last["until"] + 1.0:
            last["until"] = max(last["until"], b)
            last["messages"] += 1
            last["deliveries"] += n
            last["most_deliveries_of_one"] = max(last["most_deliveries_of_one"], n)
            if n == last["most_deliveries_of_one"]:
                last["example_id"] = msg_id
        else:
            incidents.append({"q": q, "from": a, "until": b, "messages": 1, "deliveries": n,
                              "most_deliveries_of_one": n, "example_id": msg_id})
    for it in incidents:
        it["faults_at_start"] = faults_at(it["from"], 3.0, 3.0)
        it["disk_fault_throughout"] = disk_trouble(it["from"], 0) and disk_trouble(it["until"], 0)
        V["redelivery_storm"].append(it)

    # ---- order
    # A dead-letter queue holds messages in the order they were dead-lettered, which
    # no client observes exactly: no order is checked there.
    dlq_targets = set(dead_letter.values())
    streams = collections.defaultdict(list)
    for e in ev:
        if e["ev"] != "dlv" or not e["first"] or e["q"] in untracked or e["q"] in dlq_targets:
            continue
        p = pub.get(e["id"])
        if p is None or state.get(e["id"]) != "confirmed":
            continue
        if e["via"] == "amqp":
            sk = (e["q"], e["c"])
        else:
            sk = (e["q"], e["c"], inc_at(e.get("ts", e["t"])))
        streams[(sk, p["p"])].append((p["seq"], e))
    order_checked = 0
    for (sk, producer), items in streams.items():
        last = -1
        for seq, e in items:
            order_checked += 1
            if seq < last:
                V["order"].append({"q": sk[0], "stream": list(map(str, sk[1:])), "producer": producer,
                                   "seq": seq, "after_seq": last, "t": e["t"]})
            last = max(last, seq)
    F["order_checked_deliveries"] = order_checked
    # groups
    by_group = collections.defaultdict(list)
    for i, p in pub.items():
        if "grp" in p and state.get(i) == "confirmed":
            by_group[(p["q"][0], p["p"], p["grp"])].append((p["seq"], i))
    first_ack_start = {}
    for e in ev:
        if e["ev"] == "ack" and ack_may_settle(e):
            key = (e["q"], e["id"])
            t = e.get("ts", e["t"])
            if key not in first_ack_start or t < first_ack_start[key]:
                first_ack_start[key] = t
    group_checked = 0
    for (q, producer, g), items in by_group.items():
        items.sort()
        for (s1, i1), (s2, i2) in zip(items, items[1:]):
            a1 = first_ack_start.get((q, i1))
            if a1 is None:
                continue  # reported as lost
            for d in dlv.get((q, i2), []):
                group_checked += 1
                if d.get("te", d["t"]) < a1:
                    V["group_order"].append({"q": q, "group": g, "id": i2, "delivered_at": d.get("te", d["t"]),
                                             "before_ack_of": i1, "which_started_at": a1})
                    break
    F["group_deliveries_checked"] = group_checked

    # ---- availability
    probes = [e for e in ev if e["ev"] == "probe"]
    F["probes"] = len(probes)
    F["probes_failed"] = sum(1 for p in probes if not p["ok"])
    unexplained = []
    for p in probes:
        if p["ok"]:
            continue
        a, b = p["ts"], p["te"]
        if any(x - 0.05 <= b and a <= y + 0.05 for x, y in down):
            continue
        unexplained.append(p)
    F["probes_failed_while_down"] = F["probes_failed"] - len(unexplained)
    # merge into outages
    unexplained.sort(key=lambda p: p["ts"])
    outages = []
    for p in unexplained:
        if outages and p["ts"] <= outages[-1]["until"] + 1.0:
            o = outages[-1]
            o["until"] = max(o["until"], p["te"])
            o["probes"] += 1
            o["kinds"].add(p["kind"])
            o["errors"].add(p.get("err") or "?")
        else:
            outages.append({"from": p["ts"], "until": p["te"], "probes": 1, "kinds": {p["kind"]}, "errors": {p.get("err") or "?"}})
    for o in outages:
        near = faults_at(o["from"], 20.0, 0.0)
        V["unavailable"].append({"from": o["from"], "until": o["until"], "seconds": round(o["until"] - o["from"], 2),
                                 "probes_failed": o["probes"], "probe": sorted(o["kinds"]), "errors": sorted(o["errors"]),
                                 "faults_active": near})
    # ---- rss
    rss = [e for e in ev if e["ev"] == "rss"]
    if rss:
        F["rss_max_mib"] = round(max(e["kib"] for e in rss) / 1024, 1)
        F["rss_median_mib"] = round(sorted(e["kib"] for e in rss)[len(rss) // 2] / 1024, 1)
    # ---- end state
    finals = [e for e in ev if e["ev"] == "final_queues"]
    if finals:
        names = set(finals[-1]["names"])
        for q in campaign.get("queues", QUEUES):
            if q not in names:
                V["queue_missing_at_end"].append({"q": q})
    else:
        V["no_final_drain"].append({"why": "the campaign did not reach the drain"})
    for e in ev:
        if e["ev"] == "drain_incomplete":
            V["drain_incomplete"].append({"q": e["q"]})
        elif e["ev"] == "thread_error":
            V["harness_thread_error"].append({"thread": e["name"], "err": e["err"][-600:]})
    F["disk_fills"] = sum(1 for e in ev if e["ev"] == "disk" and e["phase"] == "fill")
    F["restart_failures"] = sum(1 for e in ev if e["ev"] == "restart_failed")
    F["connections_opened"] = len(conn_open)
    F["threads_stuck"] = [e["names"] for e in ev if e["ev"] == "threads_stuck"]
    t_end = max((e["t"] for e in ev), default=0)
    F["history_events"] = len(ev)
    F["history_seconds"] = round(t_end, 1)
    # ---- label known open defects, item by item
    labels = {}
    for kind, items in V.items():
        for it in items:
            label = KNOWN_OPEN.get(kind)
            if kind == "crash" and "overflow" in it.get("reason", ""):
                label = KNOWN_OPEN["crash:stack overflow"]
            if kind == "unavailable" and "http_slowloris" in it.get("faults_active", []):
                label = KNOWN_OPEN["unavailable:http_slowloris"]
            if label:
                it["known_open"] = label
        known = [it["known_open"] for it in items if "known_open" in it]
        if known:
            labels[kind] = f"{len(known)} of {len(items)}: " + "; ".join(sorted(set(known)))
    rep["violation_labels"] = labels
    rep["violations_known_open"] = sum(1 for items in V.values() for it in items if "known_open" in it)
    rep["violation_counts"] = {k: len(v) for k, v in V.items() if v}
    rep["violations_total"] = sum(rep["violation_counts"].values())
    rep["violations"] = {k: v for k, v in V.items() if v}
    return rep
