#!/usr/bin/env python3
"""Turns a benches/run.sh results folder into BENCHMARKS.md on stdout.

Every `<label>.<server>.<run>.json` file holds the load generator's one JSON line for one
run. A figure in the tables is the median over the runs; a ratio is Halley's median divided
by the peer's (for memory, CPU and latency lower is better; for rates higher is better).
Runs that failed (no JSON, or an "error" field) are listed, never silently averaged in.
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
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        value = int(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if abs(value) >= 1 else f"{value:.{digits + 2}f}".rstrip("0").rstrip(".")


def ratio(halley, peer):
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
            medians[server] = [median(results, c[1]) for c in columns]
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
        ceiling = [median(results, c[1]) for c in columns]
    halley_rows = []
    for label in labels:
        results = runs[label].get("halley")
        if label == "s6-amqp-ceiling" or not results:
            continue
        medians = [median(results, c[1]) for c in columns]
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


def main():
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
    if any(l.startswith("s6-") for l in runs):
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
            "(closed loop); every receiver records arrival − stamp. lost = sent × receivers − "
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
