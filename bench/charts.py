#!/usr/bin/env python3
"""Charts of a bench/compare.sh run, from its raw CSV (results/NAME.csv).

    python3 bench/charts.py bench/results/latest.csv [--title TEXT]

writes, next to the CSV (and so next to the Markdown report of the run):

    NAME-ratios.svg  packet and its peers as a multiple of the reference
                     server of each scenario, the median over the rounds of
                     the ratio within a round (as the report's ratio rows):
                     echo against the C epoll server (c), with a noise
                     band around 1: the largest factor, either way, between
                     c and a second process of the same C server (c2) in a
                     round; HTTP and HTTPS against nginx. Whiskers: lowest
                     and highest ratio of the rounds.
    NAME-cpu.svg     server CPU time per message / request / handshake
    NAME-p99.svg     99th percentile latency (cases whose client measures it)
    NAME-rss.svg     peak RSS of a fresh server process

Bars are medians over the rounds. Needs matplotlib (compare.sh installs
Debian's python3-matplotlib, or matplotlib from PyPI with pip).
"""

import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# Parts whose rows compare servers (scaling compares configurations of one
# server and is left to its table).
PARTS = ("echo", "http", "https", "profile")
REFERENCE = {"echo": "c", "profile": "c", "http": "nginx", "https": "nginx"}
# The same colour for a server in every chart.
COLOURS = {
    "packet": "#1f77b4",
    "c": "#7f7f7f",
    "c2": "#bcbcbc",
    "em": "#d62728",
    "packet-rb": "#9467bd",
    "nginx": "#2ca02c",
    "thin": "#ff7f0e",
    "alt": "#17becf",
    "base": "#8c564b",
}
ECHO_TITLES = {
    "a": "echo a: 50 conns, 64 B, depth 16",
    "b": "echo b: 500 conns, 32 B, depth 1",
    "c": "echo c: 4 conns, 16 KiB, depth 4",
    "d": "echo d: connect, 1 B, close",
}
CASE_TITLES = {
    ("http", "hello"): "http: GET /, keep-alive",
    ("https", "keepalive"): "https: keep-alive",
    ("https", "full"): "https: full handshakes",
    ("https", "resumed"): "https: resumed handshakes",
    ("https", "handshake"): "https: handshake per request (wrk)",
}
UNITS = {"echo": "msg", "profile": "msg", "http": "req", "https": "req"}


def case_title(part, case):
    if part in ("echo", "profile"):
        t = ECHO_TITLES.get(case, "echo " + case)
        return t if part == "echo" else "profile " + t
    return CASE_TITLES.get((part, case), f"{part}: {case}")


def case_unit(part, case):
    if part in ("echo", "profile") and case == "d":
        return "conn"
    if part == "https" and case in ("full", "resumed", "handshake"):
        return "handshake"
    return UNITS[part]


def load(path):
    """rows[(part, case)][server][round] = row (a dict of the CSV)"""
    rows = defaultdict(lambda: defaultdict(dict))
    order = []  # (part, case) in the order the run made them
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["part"] not in PARTS:
                continue
            key = (r["part"], r["case"])
            if key not in rows:
                order.append(key)
            rows[key][r["server"]][r["round"]] = r
    return rows, order


def num(row, column):
    try:
        return float(row.get(column) or 0)
    except ValueError:
        return 0.0


def servers_of(by_server):
    """Servers of a case, in the colour table's order, then the rest."""
    known = [s for s in COLOURS if s in by_server]
    return known + sorted(s for s in by_server if s not in COLOURS)


def round_ratios(by_server, server, ref, column="rate"):
    """The ratio server / ref within each round both ran."""
    out = []
    for rnd, row in by_server.get(server, {}).items():
        base = by_server.get(ref, {}).get(rnd)
        if base is not None and num(base, column) > 0 and num(row, column) > 0:
            out.append(num(row, column) / num(base, column))
    return out


def style(ax):
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def grouped_ratio_panel(ax, rows, keys, ref, noise):
    """One group of bars per case: every server but ref as a multiple of ref."""
    cases = [k for k in keys if ref in rows[k]]
    others = []
    for k in cases:
        for s in servers_of(rows[k]):
            if s not in (ref, noise) and s not in others:
                others.append(s)
    if not cases or not others:
        ax.set_visible(False)
        return
    width = 0.8 / len(others)
    bands = {}
    top = 1.0
    for i, k in enumerate(cases):
        if noise and noise in rows[k]:
            # Two processes of one server differ by up to this factor, one
            # way or the other: ratios inside the band are noise.
            spread = round_ratios(rows[k], noise, ref)
            if spread:
                far = max(max(r, 1 / r) for r in spread)
                bands[i] = far
                ax.add_patch(
                    plt.Rectangle(
                        (i - 0.45, 1 / far),
                        0.9,
                        max(far - 1 / far, 0.004),
                        color="#f2c14e",
                        alpha=0.35,
                        linewidth=0,
                        zorder=1,
                    )
                )
    for j, s in enumerate(others):
        xs, ys, lo, hi = [], [], [], []
        for i, k in enumerate(cases):
            r = round_ratios(rows[k], s, ref)
            if not r:
                continue
            m = statistics.median(r)
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(m)
            lo.append(m - min(r))
            hi.append(max(r) - m)
            top = max(top, max(r))
        if not xs:
            continue
        ax.bar(xs, ys, width * 0.92, label=s, color=COLOURS.get(s), zorder=2)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="#333333", elinewidth=0.8, capsize=2, zorder=3)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 2),
                        ha="center", va="bottom", fontsize=6.5, zorder=4)
    ax.axhline(1.0, color="#333333", linewidth=0.8, zorder=2)
    # Scaled to the bars (a wide noise band is cut off, its factor written
    # on it), with headroom above the highest whisker for the legend.
    ymax = top * 1.3
    ax.set_ylim(0, ymax)
    for i, far in bands.items():
        ax.annotate(f"noise ×{far:.2f}", (i, min(far, ymax * 0.86)), textcoords="offset points", xytext=(0, -9),
                    ha="center", va="top", fontsize=6.5, color="#8a6d1c", zorder=4)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([case_title(*k).replace(": ", ":\n", 1) for k in cases], fontsize=7.5)
    ax.set_ylabel(f"× {ref} (rate, higher is faster)")
    style(ax)
    handles, labels = ax.get_legend_handles_labels()
    if noise and any(noise in rows[k] for k in cases):
        handles.append(plt.Rectangle((0, 0), 1, 1, color="#f2c14e", alpha=0.35))
        labels.append(f"noise: {noise} vs {ref} (the same server), largest gap of the rounds either way")
    ax.legend(handles, labels, fontsize=7, frameon=False, loc="upper left", ncol=2)


def chart_ratios(rows, order, path, title):
    echo = [k for k in order if k[0] == "echo"]
    web = [k for k in order if k[0] in ("http", "https")]
    panels = [p for p in ((echo, "c", "c2", "echo: × the C epoll server"),
                          (web, "nginx", None, "HTTP and HTTPS: × nginx (1 worker)")) if p[0]]
    if not panels:
        return False
    widths = [max(len(p[0]), 2) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.5 + 1.6 * sum(widths), 4.6),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    for ax, (keys, ref, noise, sub) in zip(axes[0], panels):
        grouped_ratio_panel(ax, rows, keys, ref, noise)
        ax.set_title(sub, fontsize=10)
    fig.suptitle(f"Throughput relative to the reference server — {title}", fontsize=10.5)
    fig.text(0.01, 0.01, "bars: median over the rounds of the ratio within a round; whiskers: lowest and highest round",
             fontsize=7, color="#555555")
    save(fig, path)
    return True


def chart_small_multiples(rows, order, path, title, column, ylabel, scale=1.0, skip_zero=True):
    keys = []
    for k in order:
        if any(num(r, column) > 0 for by_round in rows[k].values() for r in by_round.values()) or not skip_zero:
            keys.append(k)
    if not keys:
        return False
    ncols = min(4, len(keys))
    nrows = (len(keys) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.9 * nrows + 0.6), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, k in zip(axes.flat, keys):
        servers = servers_of(rows[k])
        vals = []
        for s in servers:
            v = [num(r, column) * scale for r in rows[k][s].values() if num(r, column) > 0]
            vals.append(statistics.median(v) if v else 0.0)
        bars = ax.bar(range(len(servers)), vals, 0.7, color=[COLOURS.get(s, "#999999") for s in servers])
        for b, v in zip(bars, vals):
            if v > 0:
                label = f"{v:.3g}" if v < 1000 else f"{v:,.0f}"
                ax.annotate(label, (b.get_x() + b.get_width() / 2, v), textcoords="offset points",
                            xytext=(0, 2), ha="center", va="bottom", fontsize=7)
            else:
                ax.annotate("n/a", (b.get_x() + b.get_width() / 2, 0), textcoords="offset points",
                            xytext=(0, 2), ha="center", va="bottom", fontsize=7, color="#888888")
        ax.set_xticks(range(len(servers)))
        ax.set_xticklabels(servers, fontsize=8)
        ax.set_title(case_title(*k), fontsize=8.5)
        ax.set_ylabel(ylabel.format(unit=case_unit(*k)), fontsize=8)
        ax.set_ylim(0, max(vals + [1e-9]) * 1.18)
        ax.tick_params(axis="y", labelsize=7)
        style(ax)
    fig.suptitle(f"{title}", fontsize=10.5)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save(fig, path)
    return True


PNG = False


def save(fig, path):
    fig.savefig(path, format="svg", metadata={"Date": None})
    if PNG:
        fig.savefig(path[: -len(".svg")] + ".png", format="png", dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="raw results of compare.sh (results/NAME.csv)")
    ap.add_argument("--title", default="", help="the run: date, commit, rounds")
    ap.add_argument("--png", action="store_true", help="a PNG beside each SVG too (to look at them)")
    args = ap.parse_args()
    global PNG
    PNG = args.png
    # Stable ids in the SVG text, so that a chart only changes with its data.
    plt.rcParams["svg.hashsalt"] = "packet-bench"
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["font.size"] = 8.5
    rows, order = load(args.csv)
    base = args.csv[: -len(".csv")] if args.csv.endswith(".csv") else args.csv
    title = args.title or os.path.basename(base)
    written = []
    charts = [
        ("ratios", lambda p: chart_ratios(rows, order, p, title)),
        ("cpu", lambda p: chart_small_multiples(rows, order, p, f"Server CPU time per operation (µs, lower is better) — {title}",
                                                "server_cpu_us_per_op", "µs per {unit}")),
        ("p99", lambda p: chart_small_multiples(rows, order, p, f"p99 latency (µs, lower is better) — {title}",
                                                "p99_us", "p99 µs")),
        ("rss", lambda p: chart_small_multiples(rows, order, p, f"Peak RSS of the server (MiB, lower is better) — {title}",
                                                "peak_rss_kb", "MiB", scale=1 / 1024)),
    ]
    for name, draw in charts:
        path = f"{base}-{name}.svg"
        if draw(path):
            written.append(path)
    if not written:
        print(f"charts.py: nothing to chart in {args.csv} (parts {', '.join(PARTS)})", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
