#!/usr/bin/env python3
"""What a running ringway's heap holds, read from outside without stopping or rebuilding it.

Reads mimalloc's page records of the process (`/proc/PID/mem`, as root) and which of its
pages are resident (`/proc/PID/pagemap`), and prints per block size: pages, blocks in use,
blocks ever touched (capacity) and resident KiB. With `--tasks`, it also counts the live
monoio tasks by type: a task's first words are its state and its vtable, and the vtable's
`poll` leads (through the binary's symbols) to the future it runs. Two censuses minutes
apart tell a leak (blocks in use climb: which task type?) from the allocator keeping pages
it touched once (capacity climbs at the same use).

    sudo perf/heap_census.py PID [--tasks] [--json OUT]

This reads mimalloc 3's own structures (the version `libmimalloc-sys` 0.1.49 builds, page
records kept apart from the pages, at the start of each arena): another mimalloc version
needs the offsets below checked against its `include/mimalloc/types.h`. The process must run
a release build with symbols (the default `cargo build --release` here keeps them).
"""
import argparse
import bisect
import collections
import json
import os
import re
import struct
import subprocess

SLICE = 64 * 1024  # MI_ARENA_SLICE_SIZE
PAGE = 4096
# mi_arena_t: slice_count at 40, pages_meta (one mi_page_t per slice) at 136.
ARENA_SLICE_COUNT, ARENA_PAGES_META = 40, 136
# mi_page_t (release build: no free-list keys): 120 bytes.
PAGE_T = 120
PAGE_FIELDS = "<QQHHHBBQQQQ"  # thread id, free, used, capacity, reserved, _, _, local_free, thread_free, block_size, page_start
PAGE_SLICE = 104  # memid.mem.arena.slice_index, slice_count (u32 each)


class Proc:
    def __init__(self, pid):
        self.pid = pid
        self.mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
        self.pagemap = open(f"/proc/{pid}/pagemap", "rb", buffering=0)

    def read(self, addr, n):
        self.mem.seek(addr)
        return self.mem.read(n)

    def word(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def resident(self, addr, n):
        """Which of the n 4 KiB pages from addr are in memory."""
        self.pagemap.seek(addr // PAGE * 8)
        raw = self.pagemap.read(8 * n)
        return [bool(v >> 63) for v in struct.unpack(f"<{n}Q", raw)]

    def chain(self, p, lo, hi, limit=100000):
        """The blocks of a free list inside [lo, hi) (release builds keep plain next
        pointers). The process runs on: a list that leaves the page changed under us."""
        seen = set()
        while p and len(seen) < limit:
            if not lo <= p < hi:
                raise OSError("a free list changed while read")
            seen.add(p)
            p = self.word(p)
        return seen


def arenas(pid):
    """mimalloc's arenas: anonymous, 64 KiB-aligned mappings of 32 MiB or more."""
    out = []
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if len(parts) == 5 and hi - lo >= 32 << 20 and lo % SLICE == 0:
            out.append((lo, hi))
    return out


def pages(proc, lo, hi):
    """(slice start, block size, used, capacity, reserved, resident KiB, page_start, free lists) per page."""
    head = proc.read(lo, 144)
    count = struct.unpack_from("<Q", head, ARENA_SLICE_COUNT)[0]
    meta = struct.unpack_from("<Q", head, ARENA_PAGES_META)[0]
    if not (lo <= meta < hi) or count * SLICE > hi - lo:
        raise SystemExit(f"no mimalloc 3 arena header at {lo:#x} (another mimalloc version?)")
    records = proc.read(meta, PAGE_T * count)
    resident = proc.resident(lo, (hi - lo) // PAGE)
    for i in range(count):
        f = struct.unpack_from(PAGE_FIELDS, records, i * PAGE_T)
        tid, free, used, cap, res, _, _, local, thread, bsize, start = f
        if bsize == 0 or not (lo <= start < hi):
            continue
        index, slices = struct.unpack_from("<II", records, i * PAGE_T + PAGE_SLICE)
        if index != i or slices == 0:
            continue
        s = (i * SLICE) // PAGE
        kib = sum(resident[s:s + slices * SLICE // PAGE]) * 4
        yield dict(slice=lo + i * SLICE, block=bsize, used=used, capacity=cap, reserved=res, kib=kib,
                   start=start, thread=tid & ~7, lists=(free, local, thread & ~3))


class Symbols:
    def __init__(self, pid):
        exe = os.readlink(f"/proc/{pid}/exe")
        self.base = min(int(line.split("-")[0], 16) for line in open(f"/proc/{pid}/maps") if line.rstrip().endswith(exe))
        out = subprocess.run(["nm", exe], capture_output=True, text=True, check=True).stdout
        syms = []
        for line in out.splitlines():
            p = line.split(" ", 2)
            if len(p) == 3 and p[0] and p[1] in "tTdDrR":
                syms.append((int(p[0], 16), p[2]))
        syms.sort()
        self.addrs = [a for a, _ in syms]
        self.names = [n for _, n in syms]
        self.exe = exe
        self._future = {}

    def at(self, addr):
        i = bisect.bisect_right(self.addrs, addr - self.base) - 1
        return self.names[i] if i >= 0 else "?"

    def future(self, poll):
        """The future a task's poll runs: the Stage<...> that its harness drops."""
        if poll not in self._future:
            rel = poll - self.base
            text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={rel:#x}",
                                   f"--stop-address={rel + 16:#x}", self.exe], capture_output=True, text=True).stdout
            jump = re.search(r"jmp\s+([0-9a-f]+)", text)
            name = "?"
            if jump:
                harness = int(jump.group(1), 16)
                text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={harness:#x}",
                                       f"--stop-address={harness + 400:#x}", self.exe],
                                      capture_output=True, text=True).stdout
                m = re.search(r"drop_in_place\$LT\$monoio\.\.task\.\.core\.\.Stage\$LT\$(.*?)\$GT\$\$GT\$", text)
                if m:
                    name = demangle(m.group(1))
            self._future[poll] = name
        return self._future[poll]


def demangle(s):
    for a, b in [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$u7b$", "{"), ("$u7d$", "}"), ("$C$", ","),
                 ("..", "::")]:
        s = s.replace(a, b)
    return s


def tasks(proc, page_list, syms):
    """Live monoio tasks by the future they run: a block in use whose second word points at a
    vtable whose first entry is a task `poll`."""
    found = collections.Counter()
    vtables = {}
    for p in page_list:
        if p["block"] > SLICE:
            continue
        try:
            end = p["start"] + p["reserved"] * p["block"]
            free = set().union(*(proc.chain(x, p["start"], end) for x in p["lists"]))
            data = proc.read(p["start"], p["capacity"] * p["block"])
        except OSError:  # a list changed under us: skip the page this time
            continue
        # Blocks whose first 24 bytes were read (the page may have grown meanwhile).
        whole = (len(data) - 24) // p["block"] + 1 if len(data) >= 24 else 0
        for j in range(min(p["capacity"], whole)):
            if p["start"] + j * p["block"] in free:
                continue
            vtable, owner = struct.unpack_from("<QQ", data, j * p["block"] + 8)
            if not (syms.base < vtable < syms.base + (64 << 20)) or owner > 1024:
                continue
            if vtable not in vtables:
                try:
                    poll = proc.word(vtable)
                except OSError:
                    poll = 0
                vtables[vtable] = syms.future(poll) if "4task3raw4poll" in syms.at(poll) else None
            if vtables[vtable]:
                found[(vtables[vtable], p["block"])] += 1
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pid", type=int)
    ap.add_argument("--tasks", action="store_true", help="also count live monoio tasks by future")
    ap.add_argument("--json", metavar="OUT", help="write the census as JSON too")
    args = ap.parse_args()
    proc = Proc(args.pid)
    all_pages = [p for lo, hi in arenas(args.pid) for p in pages(proc, lo, hi)]
    by_block = collections.defaultdict(lambda: collections.Counter())
    for p in all_pages:
        c = by_block[p["block"]]
        c["pages"] += 1
        for k in ("used", "capacity", "kib"):
            c[k] += p[k]
    print(f"{'block':>8} {'pages':>5} {'in use':>7} {'touched':>7} {'resident KiB':>12} {'in use KiB':>10}")
    for b in sorted(by_block):
        c = by_block[b]
        print(f"{b:>8} {c['pages']:>5} {c['used']:>7} {c['capacity']:>7} {c['kib']:>12} {c['used'] * b / 1024:>10.1f}")
    total = sum(c["kib"] for c in by_block.values())
    in_use = sum(c["used"] * b for b, c in by_block.items()) / 1024
    print(f"{'all':>8} {len(all_pages):>5} {'':>7} {'':>7} {total:>12} {in_use:>10.1f}")
    out = {"blocks": {str(b): dict(c) for b, c in by_block.items()}}
    if args.tasks:
        found = tasks(proc, all_pages, Symbols(args.pid))
        print("\nlive tasks by future (block size):")
        for (name, block), n in sorted(found.items(), key=lambda kv: -kv[1]):
            print(f"{n:>6}  {name}  ({block})")
        out["tasks"] = [{"future": k[0], "block": k[1], "count": n} for k, n in found.items()]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
