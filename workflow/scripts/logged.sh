#!/usr/bin/env bash
# logged.sh LOG COMMAND...: run COMMAND with its output in LOG. Snakemake deletes a job's log before a
# retry, so a failed attempt's log is also kept as LOG.failed-<n> (n = 1, 2, ...), where nothing deletes it.
log=$1
shift
"$@" > "$log" 2>&1 && exit 0
status=$?
n=1
while [ -e "$log.failed-$n" ]; do n=$((n + 1)); done
cp "$log" "$log.failed-$n"
# Say why on the console too (Snakemake shows a job's stderr): mitp's own error lines, else the log's end.
reason=$(grep -E "^(error|interrupted):" "$log" | tail -n 3)
printf '%s\n' "${reason:-$(tail -n 5 "$log")}" "(whole output: $log)" >&2
exit "$status"
