#!/usr/bin/env python3
"""Turns a benches/run.sh results folder into BENCHMARKS.md on stdout.

Every `<label>.<server>.<run>.json` file holds the load generator's one JSON line for one
run. A figure in the tables is the median over the runs; a ratio is Halley's median divided
by the peer's (for memory, CPU and latency lower is better; for rates higher is better).
Runs that failed (no JSON, or an "error" field) are listed, never silently averaged in.

The Soak section comes from the newest `benches/results/soak-*.json` (written by
`benches/soak.sh`); without one, the Soak section of the current BENCHMARKS.md is kept.
`report.py --update-soak [BENCHMARKS.md] [soak.json]` rewrites only that section in place.
"""

import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections import defaultdict

SERVERS = ["halley", "socketio", "socketioxide"]
NAMES = {
    "halley": "Halley",
    "socketio": "Socket.IO (Node)",
    "socketioxide": "socketioxide",
    "ceiling": "lapin consumer (ceiling)",
    "halley-cluster": "Halley cluster",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dig(obj, path):
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def load(folder):
    runs = defaultdict(lambda: defaultdict(list))  # label -> server -> [result]
    failures = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        label, server, run = os.path.basename(path)[: -len(".json")].rsplit(".", 2)
        text = open(path, encoding="utf-8").read().strip()
        try:
            result = json.loads(text.splitlines()[-1]) if text else None
        except json.JSONDecodeError:
            result = None
        if not isinstance(result, dict) or "error" in result:
            reason = (result or {}).get("error", "no result") if isinstance(result, dict) else "no result"
            failures.append(f"{label} / {NAMES.get(server, server)} / run {run}: {reason}")
            continue
        runs[label][server].append(result)
    return runs, failures


def median(results, path):
    values = [dig(r, path) for r in results]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(values) if values else None


def spread(results, path, digits):
    """The smallest and largest value of `path` over the runs, as `min–max`."""
    values = [dig(r, path) for r in results]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return f"{fmt(min(values), digits)}–{fmt(max(values), digits)}" if values else "–"


def column_median(results, column):
    """A column is (title, json path, digits) or (title, json path, digits, scale); a path
    `range:<path>` is the spread of `<path>` over the runs (a text, no ratio)."""
    if column[1].startswith("range:"):
        return spread(results, column[1][len("range:"):], column[2])
    value = median(results, column[1])
    if value is not None and len(column) > 3:
        value = value * column[3]
    return value


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        value = int(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if abs(value) >= 1 else f"{value:.{digits + 2}f}".rstrip("0").rstrip(".")


def ratio(halley, peer):
    if isinstance(halley, str) or isinstance(peer, str):
        return ""
    if halley is None or peer in (None, 0):
        return "–"
    return f"{halley / peer:.2f}×"


def table(runs, labels, columns, servers):
    """One row per (label, server); columns are (title, json path, digits); then ratios."""
    lines = []
    head = ["scenario", "server", "runs"] + [c[0] for c in columns]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for label in labels:
        if label not in runs:
            continue
        medians = {}
        for server in servers:
            results = runs[label].get(server)
            if not results:
                continue
            medians[server] = [column_median(results, c) for c in columns]
            cells = [label, NAMES[server], str(len(results))]
            cells += [fmt(v, c[2]) for v, c in zip(medians[server], columns)]
            lines.append("| " + " | ".join(cells) + " |")
        if "halley" in medians:
            for peer in servers:
                if peer == "halley" or peer not in medians:
                    continue
                cells = [label, f"ratio Halley / {NAMES[peer]}", ""]
                cells += [ratio(h, p) for h, p in zip(medians["halley"], medians[peer])]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def amqp_table(runs, labels, columns):
    """S6: Halley's rows (one per receiver count), the ceiling's row, then Halley / ceiling."""
    lines = []
    head = ["scenario", "consumer", "runs"] + [c[0] for c in columns]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    ceiling = None
    results = runs.get("s6-amqp-ceiling", {}).get("ceiling")
    if results:
        ceiling = [column_median(results, c) for c in columns]
    halley_rows = []
    for label in labels:
        results = runs[label].get("halley")
        if label == "s6-amqp-ceiling" or not results:
            continue
        medians = [column_median(results, c) for c in columns]
        halley_rows.append((label, medians))
        cells = [label, NAMES["halley"], str(len(results))]
        cells += [fmt(v, c[2]) for v, c in zip(medians, columns)]
        lines.append("| " + " | ".join(cells) + " |")
    if ceiling is not None:
        results = runs["s6-amqp-ceiling"]["ceiling"]
        cells = ["s6-amqp-ceiling", NAMES["ceiling"], str(len(results))]
        cells += [fmt(v, c[2]) for v, c in zip(ceiling, columns)]
        lines.append("| " + " | ".join(cells) + " |")
        for label, medians in halley_rows:
            cells = [label, "ratio Halley / ceiling", ""]
            cells += [
                ratio(h, p) if c[1] == "messages_per_s" else ""
                for h, p, c in zip(medians, ceiling, columns)
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def labels_like(runs, prefix):
    def key(label):
        numbers = [int(n) for n in re.findall(r"\d+", label)]
        return (re.sub(r"\d+", "", label), numbers)

    return sorted((l for l in runs if l.startswith(prefix)), key=key)


def command(cmd, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions():
    out = {}
    out["Halley"] = command(["git", "rev-parse", "--short", "HEAD"], ROOT) or "?"
    out["rustc"] = command(["rustc", "--version"])
    out["node"] = command(["node", "--version"])
    lock = os.path.join(ROOT, "benches/peers/socketio-node/package-lock.json")
    if os.path.exists(lock):
        packages = json.load(open(lock, encoding="utf-8")).get("packages", {})
        for name in ["socket.io", "engine.io", "ws", "bufferutil", "utf-8-validate"]:
            version = packages.get(f"node_modules/{name}", {}).get("version")
            if version:
                out[f"npm {name}"] = version
    cargo_lock = os.path.join(ROOT, "benches/peers/socketioxide/Cargo.lock")
    if os.path.exists(cargo_lock):
        text = open(cargo_lock, encoding="utf-8").read()
        for name in ["socketioxide", "engineioxide", "hyper", "tokio"]:
            m = re.search(rf'name = "{name}"\nversion = "([^"]+)"', text)
            if m:
                out[f"crate {name} (peer)"] = m.group(1)
    loadgen_lock = os.path.join(ROOT, "benches/loadgen/Cargo.lock")
    if os.path.exists(loadgen_lock):
        m = re.search(r'name = "lapin"\nversion = "([^"]+)"', open(loadgen_lock, encoding="utf-8").read())
        if m:
            out["crate lapin (load generator)"] = m.group(1)
    return out


def machine():
    cpu = ""
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in open("/proc/meminfo", encoding="utf-8"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
            break
    return f"{os.cpu_count()} cores ({cpu}), {mem}, Linux {platform.release()}"


SOAK_TITLE = "## Soak"


def latest_soak():
    """The newest readable benches/results/soak-*.json (names carry a UTC stamp), or None."""
    for path in sorted(glob.glob(os.path.join(ROOT, "benches/results/soak-*.json")), reverse=True):
        try:
            data = json.load(open(path, encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            return path, data
    return None


def existing_soak(markdown):
    """The Soak section of a BENCHMARKS.md text (title to the next `## ` heading), or None."""
    m = re.search(rf"^{re.escape(SOAK_TITLE)}\b.*?(?=^## |\Z)", markdown, re.S | re.M)
    return m.group(0).strip() if m else None


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:,.1f} MiB"


def num(value):
    return "?" if value is None else f"{value:g}"


def yes_no(value):
    return {True: "yes", False: "**no**"}.get(value, "–")


def soak_section(path, d):
    if "error" in d and "population" not in d:
        return f"{SOAK_TITLE}\n\nThe last soak run (`{os.path.relpath(path, ROOT)}`) failed: {d['error']}"
    mem = d.get("memory", {})
    log = d.get("server_log", {})
    checks = d.get("checks", {})
    mix = ", ".join(f"{t} {w}" for t, w in d.get("mix", {}).items())
    life = d.get("life_s", ["?", "?"])
    minutes = (d.get("churn_s") or 0) / 60
    lat = d.get("latency", {})
    if d.get("warmup_churn_s"):
        warmup = f"{num(d['warmup_churn_s'])} s of the same churn"
    else:
        warmup = f"everyone in at once for {num(d.get('warmup_hold_s'))} s"
    lines = [SOAK_TITLE, ""]
    lines.append(
        f"`bash benches/soak.sh` against the bench app (`examples/bench_server`, pinned to core 0; "
        f"the load generator on core 1): a population of {fmt(d.get('population'))} clients on "
        f"mixed transports (weights: {mix}) joining and leaving for {minutes:g} min while one "
        f"client emits `bcast` {num(d.get('rate'))} times a second (answered with `tick` to "
        f"everyone). Each client lives {life[0]:g}–{life[1]:g} s, then leaves cleanly (`41`, "
        f"close) or, {fmt(100 * (d.get('drop_fraction') or 0), 0)} % of them, just closes its "
        f"TCP connections. Before that, a warm-up cycle ({warmup}, then everyone out) and "
        f"{num(d.get('reap_s'))} s for the server to reap the dropped sessions and trim its "
        f"memory give the "
        f"warmed-up baseline RSS; the final RSS is read the same way after the churn. lost = "
        f"seqs a client did not get between the first and the last it got; edges = seqs sent "
        f"more than {num(d.get('grace_s'))} s after it connected and before it left, outside "
        f"that range. Result `{os.path.relpath(path, ROOT)}`, stamp {d.get('stamp', '?')}."
    )
    lines.append("")
    lines.append("| check | result |")
    lines.append("|---|---|")
    verdict = {True: "yes", False: "no"}.get(d.get("pass"), "–")
    lines.append(f"| **pass** | **{verdict}** |")
    lines.append(f"| clients connected (total) | {fmt(d.get('clients_connected_total'))} |")
    lines.append(
        f"| broadcasts sent / deliveries | {fmt(d.get('broadcasts_sent'))} / "
        f"{fmt(d.get('deliveries'))} |"
    )
    lines.append(
        f"| lost by connected clients | {fmt(d.get('lost'))} (edges {fmt(d.get('lost_edges'))}, "
        f"duplicates {fmt(d.get('duplicates'))}) |"
    )
    lines.append(
        f"| latency p50 / p99 / max | {fmt(lat.get('p50_ms'), 2)} / {fmt(lat.get('p99_ms'), 2)} / "
        f"{fmt(lat.get('max_ms'), 2)} ms |"
    )
    lines.append(
        f"| leaves: clean / dropped / ended by an error | {fmt(d.get('clean_leaves'))} / "
        f"{fmt(d.get('tcp_drops'))} / {fmt(d.get('ended_by_error'))} |"
    )
    errors = d.get("errors") or {}
    errors_text = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "none"
    lines.append(f"| client errors | {errors_text} |")
    lines.append(
        f"| server RSS: cold / warmed-up baseline / peak / final | {mib(mem.get('rss_start_kib'))} / "
        f"{mib(mem.get('baseline_kib'))} / {mib(mem.get('peak_kib'))} / {mib(mem.get('final_kib'))} |"
    )
    ratio_text = "–" if mem.get("final_vs_baseline") is None else f"{mem['final_vs_baseline']:.3f}"
    lines.append(
        f"| final within 10 % of the baseline | {yes_no(mem.get('final_within_10pct'))} "
        f"(final / baseline = {ratio_text}) |"
    )
    lines.append(
        f"| server fds: start / baseline / final | {fmt(mem.get('fds_start'))} / "
        f"{fmt(mem.get('fds_baseline'))} / {fmt(mem.get('fds_final'))} |"
    )
    log_text = (
        f"{fmt(log.get('error_lines'))} ERROR, {fmt(log.get('warn_lines'))} WARN"
        if log
        else "not checked"
    )
    lines.append(f"| server log | {log_text} |")
    lines.append(
        f"| CPU s/s: server / load generator | {fmt(d.get('server_cpu_s_per_s'), 2)} / "
        f"{fmt(d.get('loadgen_cpu_s_per_s'), 2)} |"
    )
    failed = [k for k, v in checks.items() if v is False]
    if failed:
        lines.append(f"| failed checks | {', '.join(failed)} |")
    transports = d.get("transports") or {}
    if transports:
        lines.append("")
        lines.append("| transport | clients | deliveries | lost | edges | p50 ms | p99 ms | max ms |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, t in transports.items():
            lines.append(
                f"| {name} | {fmt(t.get('clients'))} | {fmt(t.get('deliveries'))} | "
                f"{fmt(t.get('lost'))} | {fmt(t.get('lost_edges'))} | "
                f"{fmt(t.get('latency_p50_ms'), 2)} | {fmt(t.get('latency_p99_ms'), 2)} | "
                f"{fmt(t.get('latency_max_ms'), 2)} |"
            )
    if log.get("lines"):
        lines.append("")
        lines.append("Server log lines counted as errors (first ones):")
        lines.append("")
        lines.append("```")
        lines.extend(log["lines"][:20])
        lines.append("```")
    return "\n".join(lines)


def soak_markdown(benchmarks=None):
    """The Soak section: from the newest soak result, else the one BENCHMARKS.md has."""
    found = latest_soak()
    if found:
        return soak_section(*found)
    benchmarks = benchmarks or os.path.join(ROOT, "BENCHMARKS.md")
    if os.path.exists(benchmarks):
        return existing_soak(open(benchmarks, encoding="utf-8").read())
    return None


def update_soak(benchmarks, result=None):
    """Rewrites only the Soak section of `benchmarks` (appended when it has none)."""
    if result:
        section = soak_section(result, json.load(open(result, encoding="utf-8")))
    else:
        found = latest_soak()
        if not found:
            sys.exit("no benches/results/soak-*.json")
        section = soak_section(*found)
    text = open(benchmarks, encoding="utf-8").read() if os.path.exists(benchmarks) else "# Benchmarks\n"
    if existing_soak(text) is not None:
        text = re.sub(
            rf"^{re.escape(SOAK_TITLE)}\b.*?(?=^## |\Z)",
            lambda _: section + "\n\n",
            text,
            count=1,
            flags=re.S | re.M,
        )
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(benchmarks + ".tmp", "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")
    os.replace(benchmarks + ".tmp", benchmarks)


def main():
    if sys.argv[1:2] == ["--update-soak"]:
        args = sys.argv[2:]
        update_soak(
            args[0] if args else os.path.join(ROOT, "BENCHMARKS.md"),
            args[1] if len(args) > 1 else None,
        )
        return
    folder = sys.argv[1]
    runs, failures = load(folder)
    servers = [s for s in SERVERS if any(s in runs[l] for l in runs)]
    n_runs = max((len(v) for l in runs for v in runs[l].values()), default=0)
    out = []
    out.append("# Benchmarks")
    out.append("")
    out.append(
        "Written by `bash benches/run.sh` (see benches/README.md); do not edit the tables by hand. "
        f"Each figure is the median of up to {n_runs} runs; every run starts a fresh server pinned "
        "to core 0 while the load generator (`benches/loadgen`) runs pinned to core 1. Ratios are "
        "Halley / peer: below 1 is better for memory, CPU and latency, above 1 is better for rates."
    )
    out.append("")
    out.append(f"- Machine: {machine()}")
    for name, version in versions().items():
        out.append(f"- {name}: {version}")
    if any(l.startswith(("s6-", "s7-")) for l in runs):
        rabbitmq = command(["rabbitmq-diagnostics", "-q", "server_version", "-t", "5"])
        out.append(f"- RabbitMQ: {rabbitmq or '?'}")
    out.append(f"- Raw results: `{os.path.relpath(folder, ROOT)}`")
    out.append("")

    lat = [("p50 ms", "latency.p50_ms", 2), ("p99 ms", "latency.p99_ms", 2)]
    sections = [
        (
            "S1 — idle memory and CPU",
            "Clients connect, then only answer pings. RSS per connection = (RSS with N − RSS "
            "before) / N; CPU per idle second over a window longer than the ping interval.",
            "s1-",
            [
                ("connected", "connected", 0),
                ("RSS/conn bytes", "server_rss_per_conn_bytes", 0),
                ("CPU s per idle s", "server_cpu_idle_s_per_s", 4),
                ("connects/s", "connects_per_s", 0),
            ],
            servers,
        ),
        (
            "S2 — broadcast fan-out (WebSocket)",
            "One client emits `bcast` stamped with its send time, at 10/s or at saturation "
            "(closed loop: 4 broadcasts in flight, a broadcast in flight until every receiver "
            "has it); every receiver records arrival − stamp. lost = sent × receivers − "
            "delivered.",
            "s2-",
            [("receivers", "receivers", 0), ("broadcasts", "broadcasts_sent", 0)]
            + lat
            + [
                ("deliveries/s", "deliveries_per_s", 0),
                ("lost", "lost", 0),
                ("server CPU s/s", "server_cpu_s_per_s", 2),
            ],
            servers,
        ),
        (
            "S2p — paced broadcast fan-out (WebSocket)",
            "As S2, with one broadcast every 1/rate s whatever the receivers do (the shape of a "
            "real feed: no closed loop lets the server batch frames into one write); 1,600/s is "
            "about four times a server's capacity. CPU per delivery = the server's CPU time over "
            "the run / messages delivered. p99 near capacity varies a lot from run to run: its "
            "spread over the runs is shown.",
            "s2p-",
            [("receivers", "receivers", 0), ("rate/s", "rate", 0), ("broadcasts", "broadcasts_sent", 0)]
            + lat
            + [
                ("p99 spread ms", "range:latency.p99_ms", 1),
                ("deliveries/s", "deliveries_per_s", 0),
                ("lost", "lost", 0),
                ("server CPU s/s", "server_cpu_s_per_s", 2),
                ("CPU µs/delivery", "server_cpu_us_per_delivery", 2),
            ],
            servers,
        ),
        (
            "S3 — echo with acks",
            "Each client emits `message` with an ack id and sends the next one when the ack "
            "returns.",
            "s3-",
            [
                ("clients", "clients", 0),
                ("acks/s", "acks_per_s", 0),
                ("p50 ms", "rtt.p50_ms", 2),
                ("p99 ms", "rtt.p99_ms", 2),
                ("server CPU s/s", "server_cpu_s_per_s", 2),
            ],
            servers,
        ),
        (
            "S4 — long-polling receivers",
            "As S2, with the receivers on HTTP long-polling (the broadcaster stays on WebSocket).",
            "s4-",
            [("receivers", "receivers", 0)]
            + lat
            + [
                ("deliveries/s", "deliveries_per_s", 0),
                ("requests/s", "requests_per_s", 0),
                ("lost", "lost", 0),
            ],
            servers,
        ),
        (
            "S5 — Halley's streaming and legacy transports",
            "Halley only: idle memory per connection and broadcast deliveries/s at saturation per "
            "transport, against its own WebSocket path.",
            "s5-",
            [
                ("clients", "clients", 0),
                ("RSS/conn bytes", "server_rss_per_conn_bytes", 0),
                ("deliveries/s", "deliveries_per_s", 0),
                ("p99 ms", "latency.p99_ms", 2),
                ("lost", "lost", 0),
            ],
            ["halley"],
        ),
        (
            "S6 — RabbitMQ to WebSocket clients (AMQP bridge)",
            "Halley only: the `halley` binary with `--amqp-url`/`--amqp-queue`; the load generator "
            "publishes JSON messages (with their send time) to the queue as fast as the broker's "
            "confirms allow (64 unconfirmed), and 1, 100 or 1,000 WebSocket clients receive each "
            "as an event. messages/s counts a message once every client got it, from the first "
            "delivery to the last; lost = published × clients − delivered. Latency is publish → "
            "client, so at this saturation it is mostly the queue's backlog. The ceiling is a plain "
            "lapin consumer (prefetch 256, one manual ack per message, as the bridge does) on the "
            "same broker. RabbitMQ itself is not pinned: it shares both cores.",
            "s6-",
            [
                ("clients", "receivers", 0),
                ("messages", "published", 0),
                ("messages/s", "messages_per_s", 0),
                ("deliveries/s", "deliveries_per_s", 0),
                ("p50 ms", "latency.p50_ms", 2),
                ("p99 ms", "latency.p99_ms", 2),
                ("lost", "lost", 0),
                ("server CPU s/s", "server_cpu_s_per_s", 2),
            ],
            ["halley"],
        ),
        (
            "S7 — broadcast across a cluster (RabbitMQ)",
            "Halley only: the `halley` binary started 1, 2 or 3 times with `--cluster` (one fresh "
            "fanout exchange per run); the receivers (WebSocket) are spread round-robin over the "
            "nodes, and each broadcast is a `POST /publish` `{\"event\":\"tick\",\"data\":[µs, "
            "seq]}` to the first node, which delivers to its own sockets and through RabbitMQ to "
            "the others'. At a fixed rate, or at saturation: closed loop, 4 broadcasts in flight, "
            "a broadcast acknowledged once a monitor client on every node got it. Latency is "
            "send → each receiver; lost = sent × receivers − delivered. **Pinning differs from "
            "the other tables: every node shares core 0** (the load generator has core 1; "
            "RabbitMQ is not pinned and uses both), so more nodes add coordination work on the "
            "same core, not capacity. Server CPU and RSS are summed over the nodes.",
            "s7-",
            [
                ("nodes", "nodes", 0),
                ("receivers", "receivers", 0),
                ("broadcasts", "broadcasts_sent", 0),
            ]
            + lat
            + [
                ("deliveries/s", "deliveries_per_s", 0),
                ("lost", "lost", 0),
                ("server CPU s/s", "server_cpu_s_per_s", 2),
                ("server RSS MiB", "server_rss_end_kib", 1, 1 / 1024),
            ],
            ["halley-cluster"],
        ),
    ]
    for title, text, prefix, columns, section_servers in sections:
        labels = labels_like(runs, prefix)
        if not labels:
            continue
        out.append(f"## {title}")
        out.append("")
        out.append(text)
        out.append("")
        if prefix == "s6-":
            out.append(amqp_table(runs, labels, columns))
        else:
            out.append(table(runs, labels, columns, section_servers))
        out.append("")
    soak = soak_markdown()
    if soak:
        out.append(soak)
        out.append("")
    if failures:
        out.append("## Failed runs")
        out.append("")
        out.extend(f"- {f}" for f in failures)
        out.append("")
    notes = os.path.join(ROOT, "benches/NOTES.md")
    if os.path.exists(notes):
        out.append(open(notes, encoding="utf-8").read().strip())
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
