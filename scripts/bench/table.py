#!/usr/bin/env python3
"""Turns the runs of scripts/bench.sh into its two markdown tables.

Input: runs.tsv (one line per measured run: proxy, scenario, round, the loadtest's JSON summary,
CPU seconds the proxy and redis-server used during the run) and the summaries it names (which
give the load generator's own CPU seconds).
Output on stdout: the results table (median of each metric over the rounds, each metric on its
own) and the ratios table (each pystash engine against rsyslog, scenario by scenario).

Standard library only.
"""

import json
import statistics
import sys

RSYSLOG = "rsyslog"


def load(tsv_path):
    """{(proxy, scenario): [run, ...]} in first-seen order, and the scenario order."""
    groups, scenarios = {}, []
    with open(tsv_path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            try:
                with open(row["summary"]) as s:
                    summary = json.load(s)
            except (OSError, ValueError):
                continue  # the run died before writing a summary; bench.sh said so
            sent, delivered = summary.get("sent", 0), summary.get("delivered", 0)
            gen_cpu_s = summary.get("cpu_seconds")  # absent from older summaries
            lat = summary.get("latency_ms", {})
            run = {
                "delivered_per_sec": summary.get("delivered_per_sec", 0.0),
                "loss_pct": 100.0 * summary.get("lost", 0) / sent if sent else None,
                "cpu_us": 1e6 * float(row["proxy_cpu_s"]) / delivered if delivered else None,
                "redis_cpu_us": 1e6 * float(row["redis_cpu_s"]) / delivered if delivered else None,
                "gen_cpu_us": 1e6 * gen_cpu_s / delivered
                if delivered and gen_cpu_s is not None
                else None,
                "p50": lat.get("p50") if delivered else None,
                "p99": lat.get("p99") if delivered else None,
                "p99_9": lat.get("p99_9") if delivered else None,
                "bytes": summary.get("mean_record_bytes", 0.0),
                "kernel_drop_pct": 100.0 * int(row.get("udp_kernel_drops") or 0) / sent
                if sent and row["scenario"].startswith("udp")
                else None,
                "format": summary.get("config", {}).get("format", "?"),
            }
            key = (row["proxy"], row["scenario"])
            groups.setdefault(key, []).append(run)
            if row["scenario"] not in scenarios:
                scenarios.append(row["scenario"])
    return groups, scenarios


def median(runs, metric):
    """The median of a numeric metric over runs; other values are the first run's."""
    values = [r[metric] for r in runs if r[metric] is not None]
    if not values:
        return None
    if isinstance(values[0], str):
        return values[0]
    return statistics.median(values)


def rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def num(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def times(a, b):
    """a / b as '3.9x'."""
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def main(tsv_path):
    groups, scenarios = load(tsv_path)
    if not groups:
        sys.exit("no run produced a summary")
    proxies = []
    for proxy, _ in groups:
        if proxy not in proxies:
            proxies.append(proxy)
    med = {
        key: {m: median(runs, m) for m in runs[0]} | {"n": len(runs)}
        for key, runs in groups.items()
    }

    out = []
    out.append(
        "| scenario | proxy | runs | delivered/s | loss | CPU µs/rec | p50 ms | p99 ms "
        "| p99.9 ms | Redis CPU µs/rec | generator CPU µs/rec |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario in scenarios:
        for proxy in proxies:
            m = med.get((proxy, scenario))
            if m is None:
                continue
            out.append(
                f"| {scenario} | {proxy} | {m['n']} | {rate(m['delivered_per_sec'])} "
                f"| {num(m['loss_pct'], 3)}% | {num(m['cpu_us'], 2)} | {num(m['p50'], 3)} "
                f"| {num(m['p99'], 3)} | {num(m['p99_9'], 3)} | {num(m['redis_cpu_us'], 2)} "
                f"| {num(m['gen_cpu_us'], 2)} |"
            )
    sizes = []
    for scenario in scenarios:
        runs = [r for (p, s), rs in groups.items() if s == scenario for r in rs]
        sizes.append(
            f"{scenario} {statistics.mean(r['bytes'] for r in runs):.0f} B ({runs[0]['format']})"
        )
    out.append("")
    out.append("Mean record size on the wire: " + ", ".join(sizes) + ".")
    drops = [
        f"{proxy} {scenario} {m['kernel_drop_pct']:.3f}%"
        for scenario in scenarios
        for proxy in proxies
        if (m := med.get((proxy, scenario))) and m["kernel_drop_pct"]
    ]
    if drops:
        out.append(
            "Of the UDP loss, dropped by the kernel at the proxy's full socket receive buffer "
            "(/proc/net/udp, median): " + ", ".join(drops) + "."
        )

    pairs = [
        (proxy, scenario)
        for proxy in proxies
        if proxy != RSYSLOG
        for scenario in scenarios
        if (proxy, scenario) in med and (RSYSLOG, scenario) in med
    ]
    if pairs:
        out.append("")
        out.append(
            "| scenario | pystash vs rsyslog | throughput × | CPU/rec: rsyslog ÷ pystash "
            "| p99: rsyslog ÷ pystash | Redis CPU/rec: rsyslog ÷ pystash |"
        )
        out.append("|---|---|---:|---:|---:|---:|")
        for proxy, scenario in sorted(pairs, key=lambda p: scenarios.index(p[1])):
            a, r = med[(proxy, scenario)], med[(RSYSLOG, scenario)]
            out.append(
                f"| {scenario} | {proxy} | {times(a['delivered_per_sec'], r['delivered_per_sec'])} "
                f"| {times(r['cpu_us'], a['cpu_us'])} | {times(r['p99'], a['p99'])} "
                f"| {times(r['redis_cpu_us'], a['redis_cpu_us'])} |"
            )
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: table.py RUNS.tsv")
    main(sys.argv[1])
