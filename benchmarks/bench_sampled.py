"""Sampled AD on a LAION-sized store: N = 2,000,000 pairs, d = 512, float16, in the
clip-retrieval layout, generated shard by shard with alignscope.synth.write_concept_world.

Targets on a 2-core machine: a 95% guaranteed half-width <= 0.002 on AD, in under 30 s of wall
time and under 2 GB of resident memory. The AD run happens in a fresh process so its peak RSS
(ru_maxrss) is its own; the store is read through the OS page cache (warm after writing).

    python benchmarks/bench_sampled.py [--store DIR] [--n 2000000] [--dim 512]

Also runs the exact engine on the first 20,000 rows (a sub-store) and the sampled estimator on
the same rows, to show the interval covering the exact value in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MEASURE = r"""
import json, resource, sys, time
import alignscope
from alignscope.io import open_store
start = time.perf_counter()
store = open_store(sys.argv[1])
r = alignscope.alignment_difficulty(store, method="sampled", seed=int(sys.argv[2]))
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "maxrss_mb": rss,
                  "result": r.to_dict(per_sample=False)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", help="store directory (generated if it has no shards)")
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from alignscope.synth import write_concept_world

    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="alignscope-bench-"))
    if not (root / "img_emb").is_dir():
        t0 = time.perf_counter()
        write_concept_world(
            root,
            args.n,
            dim=args.dim,
            concepts=1000,
            poisoned_concepts=250,
            shard_rows=250_000,
            seed=args.seed,
            progress=True,
        )
        print(
            f"generated {args.n:,} x {args.dim} float16 store in "
            f"{time.perf_counter() - t0:.1f} s: {root}"
        )
    size = sum(p.stat().st_size for p in root.rglob("*.npy")) / 2**30
    print(f"store: {root} ({size:.2f} GiB of .npy shards)")

    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(root), str(args.seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    r = m["result"]
    g = r["ci"]["guaranteed"]
    a = r["ci"]["asymptotic"]
    print(
        f"\nSampled AD, N = {r['n']:,}, d = {r['d_image']}, {r['samples']:,} pairs sampled "
        f"(seed {r['seed']})"
    )
    print(f"  AD              {r['ad']:.5f}")
    print(
        f"  95% guaranteed  [{g['low']:.5f}, {g['high']:.5f}]  "
        f"half-width {g['halfwidth']:.2e} ({g['method']})"
    )
    print(f"  95% asymptotic  [{a['low']:.5f}, {a['high']:.5f}]  half-width {a['halfwidth']:.2e}")
    print(f"  feature (exact) {r['feature']:.5f}   structure {r['structure']:.5f}")
    print(f"  wall time       {m['wall_s']:.1f} s   (target < 30 s)")
    print(f"  peak RSS        {m['maxrss_mb']:.0f} MB (target < 2048 MB)")

    # Coverage check in the same run on a sub-store small enough for the exact engine.
    import numpy as np

    import alignscope
    from alignscope.io import open_store

    store = open_store(root)
    k = 20_000
    img, txt = np.asarray(store.read(0, k, "image")), np.asarray(store.read(0, k, "text"))
    exact = alignscope.alignment_difficulty(img, txt)
    sampled = alignscope.alignment_difficulty(img, txt, method="sampled", seed=args.seed)
    inside = sampled.ci.guaranteed.low <= exact.ad <= sampled.ci.guaranteed.high
    print(
        f"\nfirst {k:,} rows: exact AD {exact.ad:.5f} ({exact.seconds:.1f} s), sampled "
        f"{sampled.ad:.5f} +- {sampled.ci.guaranteed.halfwidth:.5f} -> covered: {inside}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
