#!/usr/bin/env python3
"""Live heap over time from a heaptrack recording, and which call sites grew.

A soak's RSS can climb for two reasons: the program holds more (a leak, a cache that never
shrinks) or the allocator holds more pages than the program's live data needs. heaptrack
records every allocation and free, so the live data can be counted at any moment: if it is
flat while RSS climbs, the climb is the allocator's.

    cargo build --release --features system-alloc    # heaptrack sees malloc, not mimalloc
    heaptrack -o /tmp/ringway ./target/release/ringway run --config ...
    perf/heap_growth.py /tmp/ringway.zst [--from SECONDS] [--every SECONDS] [--sites N]

Prints the live allocations and bytes every --every seconds, then the N call sites whose
live allocations grew most between --from and the end of the recording. A recording that
ends with a SIGKILL keeps everything live at that moment (nothing is freed on the way out).
"""
import argparse
import collections
import io
import re
import subprocess


def lines(path):
    if path.endswith(".zst"):
        p = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE)
        return io.TextIOWrapper(p.stdout)
    if path.endswith(".gz"):
        p = subprocess.Popen(["gzip", "-dc", path], stdout=subprocess.PIPE)
        return io.TextIOWrapper(p.stdout)
    return open(path)


def demangle(name):
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    for a, b in [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$u7b$", "{"), ("$u7d$", "}"), ("$C$", ","),
                 ("..", "::")]:
        name = name.replace(a, b)
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recording")
    ap.add_argument("--from", dest="start", type=float, default=120, help="seconds: the warm-up to skip (120)")
    ap.add_argument("--every", type=float, default=30, help="seconds between lines of the timeline (30)")
    ap.add_argument("--sites", type=int, default=10, help="call sites to show (10)")
    ap.add_argument("--frames", default="ringway,monoio", help="frames to show per site: names containing these")
    args = ap.parse_args()
    # heaptrack's interpreted format: 's' strings, 'i' instruction pointers (module, then
    # function/file/line triples, inlined frames included), 't' traces (ip, parent), 'a'
    # allocation infos (size, trace), '+'/'-' an allocation/free of an info, 'c' the time in ms.
    strings, ips, traces, infos = [None], [None], [None], []
    alive, sizes_alive = collections.Counter(), 0
    count, snap, now, next_line = 0, None, 0, 0.0
    timeline = []
    for line in lines(args.recording):
        c = line[:1]
        if c == "+":
            i = int(line[2:], 16)
            alive[i] += 1
            count += 1
            sizes_alive += infos[i][0]
        elif c == "-":
            i = int(line[2:], 16)
            alive[i] -= 1
            count -= 1
            sizes_alive -= infos[i][0]
        elif c == "c":
            now = int(line[2:], 16) / 1000
            if snap is None and now >= args.start:
                snap = alive.copy()
            if now >= next_line:
                timeline.append((now, count, sizes_alive))
                next_line += args.every
        elif c == "a":
            p = line.split()
            infos.append((int(p[1], 16), int(p[2], 16)))
        elif c == "t":
            p = line.split()
            traces.append((int(p[1], 16), int(p[2], 16)))
        elif c == "i":
            p = line.split()[3:]
            ips.append([int(p[k], 16) for k in range(0, len(p) - 2, 3)])
        elif c == "s":
            strings.append(line.rstrip("\n").split(" ", 2)[2])
    timeline.append((now, count, sizes_alive))
    print("seconds  live allocations  live KiB")
    for t, n, b in timeline:
        print(f"{t:7.0f}  {n:16d}  {b / 1024:8.0f}")
    if snap is None:
        return print(f"the recording ends before {args.start:g} s: no growth to show")
    by_trace = collections.defaultdict(lambda: [0, 0, 0])
    for i, (size, trace) in enumerate(infos):
        r = by_trace[trace]
        r[0] += snap.get(i, 0)
        r[1] += alive.get(i, 0)
        r[2] += (alive.get(i, 0) - snap.get(i, 0)) * size
    keys = args.frames.split(",")
    print(f"\ncall sites whose live allocations grew most from {args.start:g} s to {now:.0f} s:")
    for trace, (a, b, db) in sorted(by_trace.items(), key=lambda kv: -(kv[1][1] - kv[1][0]))[:args.sites]:
        names, t = [], trace
        while t:
            ip, t = traces[t]
            names += [demangle(strings[f]) for f in ips[ip] if f < len(strings)]
        shown = [n for n in names if any(k in n for k in keys) and "GlobalAlloc" not in n][:6]
        print(f"  {a} -> {b} ({b - a:+d}, {db / 1024:+.1f} KiB)")
        for n in shown:
            print(f"      {n[:150]}")


if __name__ == "__main__":
    main()
