#!/usr/bin/env bash
# Stops what start_cluster.sh started (by the pid files it wrote), leaving munged to the system.
set -uo pipefail
STATE=$(realpath -m "${1:?usage: stop_cluster.sh STATE_DIR}")
scancel --user=root 2>/dev/null || true
for daemon in slurmd slurmctld; do
    pidfile="$STATE/run/$daemon.pid"
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
# Without its controller, a left-behind slurm.conf makes every `scontrol` wait ~9 s for it, and
# the SLURM executor plugin calls scontrol when Snakemake starts: remove what start_cluster wrote.
rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf
for _ in $(seq 20); do
    [ -s "$STATE/run/slurmd.pid" ] && kill -0 "$(cat "$STATE/run/slurmd.pid")" 2>/dev/null || \
    { [ -s "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; } || exit 0
    sleep 0.5
done
