"""Reading the runs a benchmark script recorded (scripts/lib/bench.sh's `record`, one JSON line
per run in OUT/runs.jsonl), for the scripts' tables of medians. Imported by the scripts' inline
Python, which runs from the repository's root."""

import json
import re
import statistics


def grouped(path):
    """The runs by workload, then by mode, from labels such as `W2-on-r3`."""
    runs = {}
    for line in open(path):
        row = json.loads(line)
        name, mode = re.match(r"(W\d)-(\w+)-r\d+", row["label"]).groups()
        runs.setdefault(name, {}).setdefault(mode, []).append(row)
    return runs


def med(rows, field):
    """The median of one field over runs."""
    return statistics.median(r[field] for r in rows)


def cell(rows):
    """A table cell: the median throughput, and the median p99 latency in brackets."""
    return f"{med(rows, 'ops_per_s'):,.0f} ({med(rows, 'p99_ms'):.2f})"
