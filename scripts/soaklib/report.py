"""The summary: `render(report)` turns the checker's report into the text printed at
the end of a run (and saved as summary.txt); docs/reliability.md quotes it.
"""

import json


def render(rep):
    F = rep["figures"]
    lines = []
    c = rep.get("campaign", {})
    lines.append("=" * 78)
    lines.append(f"weir soak: {F.get('history_seconds')} s of history, seed {c.get('seed')}, "
                 f"quick={c.get('quick')}, disk fault={'on' if c.get('disk_fault') else 'off'}")
    if c.get("build"):
        b = c["build"]
        lines.append(f"binary sha256 {b.get('sha256')} built {b.get('built')} from {b.get('commit')} "
                     f"(+{b.get('changed_files')} uncommitted files in the checkout)")
    lines.append("=" * 78)
    lines.append("Faults injected")
    lines.append(f"  {'kind':<28} {'count':>6} {'as asked':>9}  outcomes")
    for k, d in rep["faults"].items():
        exp = "-" if d["as_expected"] is None else str(d["as_expected"])
        outs = "; ".join(f"{o} x{n}" for o, n in d["outcomes"].items())
        lines.append(f"  {k:<28} {d['injected']:>6} {exp:>9}  {outs}")
    lines.append("")
    lines.append("Broker")
    lines.append(f"  incarnations {F.get('broker_incarnations')}, restart time mean {F.get('restart_s_mean')} s, "
                 f"max {F.get('restart_s_max')} s, down windows {F.get('down_windows')} ({F.get('down_s_total')} s), "
                 f"restart failures {F.get('restart_failures')}")
    lines.append(f"  RSS median {F.get('rss_median_mib')} MiB, max {F.get('rss_max_mib')} MiB; "
                 f"probes {F.get('probes')}, failed {F.get('probes_failed')} "
                 f"(while down {F.get('probes_failed_while_down')})")
    lines.append("")
    lines.append("Messages")
    lines.append(f"  published {F.get('published')} {F.get('published_by')}, confirmed {F.get('confirmed')}; "
                 f"outcomes {F.get('outcomes')}")
    lines.append(f"  confirmed copies expected {F.get('copies_expected')}, lost {F.get('copies_lost')}")
    lines.append(f"  deliveries {F.get('deliveries')} (redelivered {F.get('deliveries_redelivered')}, "
                 f"drained at the end {F.get('drained')}), acks {F.get('acks')}, nacks {F.get('nacks')}, "
                 f"rejects {F.get('rejects')}")
    lines.append(f"  AMQP acks sent during a disk fault and not kept (the broker cannot say): "
                 f"{F.get('amqp_acks_lost_to_disk_fault')}")
    lines.append(f"  messages dead-lettered again after their first copy was acked: {F.get('dead_lettered_again_after_ack')}")
    lines.append(f"  AMQP acks that did not stick, within the documented window: {F.get('amqp_acks_lost_within_window')}; "
                 f"nacked publishes delivered anyway: {F.get('nacked_but_present')}")
    lines.append(f"  order checked on {F.get('order_checked_deliveries')} first deliveries, "
                 f"groups on {F.get('group_deliveries_checked')} deliveries")
    lines.append("")
    total = rep["violations_total"]
    lines.append(f"Violations: {total} ({rep.get('violations_known_open', 0)} of them known open defects of issue 17)")
    for k, n in sorted(rep["violation_counts"].items()):
        label = rep["violation_labels"].get(k)
        lines.append(f"  {k:<32} {n:>6}" + (f"   [known open {label}]" if label else ""))
        items = rep["violations"][k]
        # New ones first: they are the news.
        items = [it for it in items if "known_open" not in it] + [it for it in items if "known_open" in it]
        for it in items[:3]:
            s = json.dumps({a: b for a, b in it.items() if a not in ("log_tail", "known_open")}, default=str)
            lines.append("      " + (s if len(s) < 400 else s[:397] + "..."))
    if rep.get("campaign_error"):
        lines.append("Campaign error:")
        for e in rep["campaign_error"]:
            lines.append("  " + e.strip().splitlines()[-1])
    lines.append("=" * 78)
    return "\n".join(lines)
