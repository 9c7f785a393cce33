"""What every benchmark section shares: the command behind its figures, timing, peak memory,
and the two reports (BENCHMARKS.md for people, benchmarks.json for scripts)."""
import json
import os
import platform
import resource
import time

import numpy as np

from sora_tf.atomic import save_json, save_text

COMMAND = "python -m sora_tf.bench"


def timeit(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.percentile(times, 95))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_reports(results, out_md="BENCHMARKS.md", out_json="benchmarks.json"):
    """Write both reports; sections not run this time are kept from the previous benchmarks.json
    (each keeps its own `when`), so `--only` refreshes part of the file."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    previous = {}
    if os.path.isfile(out_json):
        with open(out_json) as f:
            previous = {k: v for k, v in json.load(f).items() if k != "meta"}
    for rows in results.values():
        for row in rows:
            row.setdefault("when", when)
    results = {**previous, **results}
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    save_json(out_json, {"meta": meta, **results})
    lines = ["# Benchmarks", "", f"Written by `make bench` ({COMMAND}) on {meta['machine']}, {meta['when']}.",
             "Each figure is measured against a baseline in the same run; read the ratios, the machine is shared.", ""]
    for section, rows in results.items():
        if not rows:
            continue
        lines += [f"## {section}", ""]
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "command"]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
        lines += ["", "Commands: " + ", ".join(sorted({f"`{r['command']}`" for r in rows})), ""]
    save_text(out_md, "\n".join(lines))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)
