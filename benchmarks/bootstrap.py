"""Bootstrap CIs for the Q2 table shape: 18 rows (model × strategy) × 139 images, 10,000
resamples, 95% — ssl_jax (one vectorised call for all rows; percentile and BCa) against the
original's numpy loop (one ``rng.choice`` per resample, per row) and ``scipy.stats.bootstrap``
(vectorised per row).

    python -m benchmarks.bootstrap           # full size
    python -m benchmarks.bootstrap --tiny    # seconds: 3 rows, 1,000 resamples

The original-style loop is timed on `--loop-rows` rows and extrapolated to all rows (stated in
the output). CIs are compared with the loop's and scipy's (Monte-Carlo differences only).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import scipy.stats as st

from benchmarks.common import print_table, write_results
from ssl_jax.stats import bootstrap_ci


def loop_original(x, n_resamples, seed=42):
    """SPEC R4.5 bootstrap_ci: default_rng(seed), one rng.choice per resample, percentile."""
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        stats[b] = np.mean(rng.choice(x, size=x.size, replace=True))
    return float(np.mean(x)), float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke test")
    ap.add_argument("--rows", type=int, default=18)
    ap.add_argument("--n", type=int, default=139)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--loop-rows", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.tiny:
        args.rows, args.resamples, args.loop_rows, args.repeats = 3, 1000, 1, 1
    rng = np.random.default_rng(0)
    # IoU-delta-like rows: skewed, different scales
    x = (rng.gamma(2.0, 0.02, (args.rows, args.n)) - 0.03) * rng.uniform(0.5, 2, (args.rows, 1))
    key = jax.random.key(42)

    rows, cis = [], {}
    for method in ("percentile", "bca"):
        t0 = time.perf_counter()
        bootstrap_ci(x, key, n_resamples=args.resamples, method=method)  # compile + run
        t_first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ci = bootstrap_ci(x, key, n_resamples=args.resamples, method=method)
            times.append(time.perf_counter() - t0)
        cis[f"jax_{method}"] = ci
        rows.append({"implementation": f"ssl_jax bootstrap_ci ({method}, all rows, one call)",
                     "rows": args.rows, "total_s": float(np.median(times)),
                     "ms_per_row": 1e3 * float(np.median(times)) / args.rows,
                     "first_call_s": t_first, "measured_rows": args.rows})

    t0 = time.perf_counter()
    loop = [loop_original(x[r], args.resamples) for r in range(args.loop_rows)]
    t_loop = (time.perf_counter() - t0) / args.loop_rows
    rows.append({"implementation": "numpy loop, original (rng.choice per resample)",
                 "rows": args.rows, "total_s": t_loop * args.rows, "ms_per_row": 1e3 * t_loop,
                 "first_call_s": float("nan"), "measured_rows": args.loop_rows})

    for method in ("percentile", "BCa"):
        t0 = time.perf_counter()
        sc = [st.bootstrap((x[r],), np.mean, n_resamples=args.resamples, method=method,
                           rng=np.random.default_rng(r)).confidence_interval
              for r in range(args.rows)]
        t_sc = time.perf_counter() - t0
        cis[f"scipy_{method.lower()}"] = sc
        rows.append({"implementation": f"scipy.stats.bootstrap ({method}, per row)",
                     "rows": args.rows, "total_s": t_sc, "ms_per_row": 1e3 * t_sc / args.rows,
                     "first_call_s": float("nan"), "measured_rows": args.rows})
    base = rows[2]["total_s"]
    for r in rows:
        r["speedup_vs_original_loop"] = base / r["total_s"]

    se = x.std(axis=1, ddof=1) / np.sqrt(args.n)
    diffs = {
        "percentile_vs_loop": max(max(abs(cis["jax_percentile"].lo[r] - loop[r][1]),
                                      abs(cis["jax_percentile"].hi[r] - loop[r][2])) / se[r]
                                  for r in range(args.loop_rows)),
        "percentile_vs_scipy": max(max(abs(cis["jax_percentile"].lo[r] - s.low),
                                       abs(cis["jax_percentile"].hi[r] - s.high)) / se[r]
                                   for r, s in enumerate(cis["scipy_percentile"])),
        "bca_vs_scipy": max(max(abs(cis["jax_bca"].lo[r] - s.low),
                                abs(cis["jax_bca"].hi[r] - s.high)) / se[r]
                            for r, s in enumerate(cis["scipy_bca"])),
    }
    print(f"{args.rows} rows x {args.n} values, {args.resamples} resamples, 95% CI; original "
          f"loop timed on {args.loop_rows} rows and extrapolated")
    print_table(rows, ["implementation", "rows", "total_s", "ms_per_row", "first_call_s",
                       "measured_rows", "speedup_vs_original_loop"])
    print("max CI endpoint difference in standard errors (Monte-Carlo only): "
          + ", ".join(f"{k} {v:.3f}" for k, v in diffs.items()))
    meta = {"config": vars(args), "max_endpoint_diff_in_se": diffs,
            "devices": [str(d) for d in jax.devices()],
            "note": "original-loop row measured on `measured_rows` rows and extrapolated; "
                    "first_call_s includes compilation"}
    name = "bootstrap_tiny" if args.tiny else "bootstrap"
    json_path, _ = write_results(name, rows, meta)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
