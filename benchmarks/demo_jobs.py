"""Where a workflow run's time went: job-seconds per rule, read from Snakemake's own log of that run.

Snakemake stamps each job's start and finish to the second; a job's seconds are their difference (so each
figure is good to about a second per job). Job-seconds add the jobs' own durations (two running at once count
twice); the wall time is the log's first to last stamp.

    snakemake --profile workflow/profiles/demo
    python benchmarks/demo_jobs.py                         # the newest log in .snakemake/log/
    python benchmarks/demo_jobs.py before.log after.log    # two runs side by side (e.g. before and after a change)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\S+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\S+)\)$")


def job_seconds(log: Path) -> tuple[dict[str, list[float]], float]:
    """{rule: [seconds of each finished job]} and the run's wall seconds, from one Snakemake log."""
    started: dict[str, datetime] = {}
    durations: dict[str, list[float]] = defaultdict(list)
    stamp = first = last = None
    pending_start = False
    for line in log.read_text(errors="replace").splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            last = stamp
        elif START.match(line):
            pending_start = True
        elif pending_start and (match := JOBID.match(line)):
            started[match.group(1)] = stamp
            pending_start = False
        elif (match := FINISHED.match(line)) and match.group(1) in started:
            durations[rule_of(match.group(2))].append((stamp - started.pop(match.group(1))).total_seconds())
    return durations, (last - first).total_seconds() if first else 0.0


def rule_of(name: str) -> str:
    """Packed training jobs (rules train_<data set>_<n>, workflow.runs_per_job) count together."""
    return "train (packed)" if name.startswith("train_") else name


def newest_log() -> Path:
    logs = sorted(Path(".snakemake/log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit("no Snakemake log in .snakemake/log/: run the workflow first, or name a log")
    return logs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="*", type=Path, help="Snakemake logs (default: the newest in .snakemake/log/)")
    args = parser.parse_args()
    logs = args.logs or [newest_log()]
    runs = [(log, *job_seconds(log)) for log in logs]
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores")
    rules = sorted({rule for _, durations, _ in runs for rule in durations}, key=lambda r: -max(sum(d.get(r, [])) for _, d, _ in runs))
    header = "| rule | " + " | ".join(f"{log.name}: jobs, job-s, mean s" for log, _, _ in runs) + " |"
    print(header)
    print("|" + "---|" * (1 + len(runs)))
    for rule in rules:
        cells = []
        for _, durations, _ in runs:
            times = durations.get(rule, [])
            cells.append(f"{len(times)}, {sum(times):.0f}, {sum(times) / len(times):.1f}" if times else "-")
        print(f"| {rule} | " + " | ".join(cells) + " |")
    totals = [f"{sum(len(t) for t in d.values())}, {sum(sum(t) for t in d.values()):.0f}, wall {wall:.0f} s" for _, d, wall in runs]
    print("| all jobs | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    main()
