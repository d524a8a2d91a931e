#!/usr/bin/env python3
"""Latency by percentile for one or more runs, from HdrHistogram .hgrm files, as a PNG.

Usage:
  python3 perf/plot.py -o OUT.png [--title TITLE] run1.hgrm:label1 run2.hgrm:label2 ...

Each FILE:LABEL is one line (LABEL defaults to the file name without .hgrm). The files are
HdrHistogram's percentile-distribution text, as `ringway-bench load --hgrm FILE` writes it
(values in milliseconds). x: percentile, spaced as 1/(1-p) on a log scale so the tail gets
room; y: latency in ms, log scale. Needs matplotlib (pip install matplotlib); no display.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
from matplotlib import ticker  # noqa: E402

TICKS = [(0.5, "50%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%")]


def read_hgrm(path):
    """(percentile, value in ms) for every row of an .hgrm file; the 100% row is left out
    because 1/(1-p) is infinite there."""
    points = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3 or fields[0] == "Value" or line.startswith("#"):
                continue
            value, p = float(fields[0]), float(fields[1])
            if p < 1.0:
                points.append((p, value))
    if not points:
        raise SystemExit(f"{path}: no percentile rows (is it an .hgrm file?)")
    return points


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="FILE[:LABEL]")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    ap.add_argument("--title", default="Latency by percentile")
    args = ap.parse_args()

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for run in args.runs:
        path, sep, label = run.rpartition(":")
        if not sep:
            path, label = run, ""
        label = label or os.path.basename(path).removesuffix(".hgrm")
        points = read_hgrm(path)
        ax.plot([1 / (1 - p) for p, _ in points], [v for _, v in points], label=label, linewidth=1.6)

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1 / (1 - p) for p, _ in TICKS], [name for _, name in TICKS])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(1, None)
    # Plain numbers (0.05, 0.1, 0.2 …) rather than powers of ten: latencies span few decades.
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(args.title)
    ax.grid(True, which="major", alpha=0.4)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)


if __name__ == "__main__":
    main()
