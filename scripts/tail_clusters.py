#!/usr/bin/env python3
"""Where a run's slowest requests fall in time.

Reads the files `QM_BENCH_DUMP=DIR cargo bench --bench gateway_overhead` writes (one per
phase: each request's start in ms into the phase, then its latency in ms) and prints, per
file, the latency quantiles and how the requests at or over the p99 cluster in time: how many
clusters (runs of slow requests with gaps of at most --gap ms) and how many 100 ms windows
hold them; --show lists those requests (start, latency), cluster by cluster.

    python3 scripts/tail_clusters.py DIR [--gap 3] [--show]
"""
import argparse
import pathlib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--gap", type=float, default=3.0, help="ms between slow requests that splits a cluster")
    ap.add_argument("--show", action="store_true", help="list the slow requests")
    args = ap.parse_args()
    for path in sorted(pathlib.Path(args.dir).glob("*.tsv")):
        rows = sorted(tuple(map(float, line.split())) for line in path.read_text().splitlines() if line.strip())
        if not rows:
            continue
        lat = sorted(r[1] for r in rows)
        q = lambda p: lat[int(len(lat) * p)] if p < 1 else lat[-1]
        p99 = q(0.99)
        slow = [(start, ms) for start, ms in rows if ms >= p99]
        starts = [start for start, _ in slow]
        clusters = 1 + sum(1 for a, b in zip(starts, starts[1:]) if b - a > args.gap)
        windows = len({int(s // 100) for s in starts})
        print(
            f"{path.name}: n {len(lat)}, p50 {q(0.5):.3f}, p99 {p99:.3f}, p99.9 {q(0.999):.2f}, "
            f"max {q(1):.2f} ms; {len(starts)} requests >= p99 in {clusters} clusters, "
            f"{windows} windows of 100 ms"
        )
        if args.show:
            for i, (start, ms) in enumerate(slow):
                if i and start - slow[i - 1][0] > args.gap:
                    print("  --")
                print(f"  {start:10.3f} {ms:7.3f}")


if __name__ == "__main__":
    main()
