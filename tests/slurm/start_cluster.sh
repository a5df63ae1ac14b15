#!/usr/bin/env bash
# A one-node SLURM (munged, slurmctld, slurmd on 127.0.0.1) for the real-SLURM test.
#   tests/slurm/start_cluster.sh STATE_DIR     (installs slurm-wlm + munge with apt when missing)
#   tests/slurm/stop_cluster.sh  STATE_DIR
# Needs root. No accounting: Snakemake is told to use `squeue` for job status.
# The node has two placeholder GPUs (gres gpu:fake:2) so GPU requests are scheduled for real.
set -euo pipefail
STATE=$(realpath -m "${1:?usage: start_cluster.sh STATE_DIR}")
HERE=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" = 0 ] || { echo "SKIP: not root (slurmd must run as root)"; exit 77; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || { echo "SKIP: no slurm-wlm/munge and no apt-get"; exit 77; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$STATE.apt.log" 2>&1 \
        || { apt-get update -q >>"$STATE.apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >>"$STATE.apt.log" 2>&1; } \
        || { echo "SKIP: apt-get install slurm-wlm munge failed (see $STATE.apt.log)"; exit 77; }
fi

if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "FAIL: a slurmctld/slurmd is already running (stop it first: tests/slurm/stop_cluster.sh ITS_STATE_DIR)"; exit 1
fi
mkdir -p "$STATE"/{spool/ctld,spool/d,log,run,gpus} /etc/slurm /etc/munge /run/munge /var/lib/munge /var/log/munge
# gres File= must name character devices: two stand-ins with /dev/null's numbers
for i in 0 1; do [ -c "$STATE/gpus/gpu$i" ] || { rm -f "$STATE/gpus/gpu$i"; mknod "$STATE/gpus/gpu$i" c 1 3; }; done
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; }
chown -R root:root /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || munged --force || true
munge -n | unmunge >/dev/null || { echo "FAIL: munged not working"; exit 1; }

CPUS=$(nproc); MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
sed -e "s#@STATE@#$STATE#g" -e "s#@CPUS@#$CPUS#g" -e "s#@MEM@#$MEM#g" "$HERE/slurm.conf.in" >/etc/slurm/slurm.conf
sed -e "s#@STATE@#$STATE#g" "$HERE/gres.conf.in" >/etc/slurm/gres.conf
rm -f /etc/slurm/cgroup.conf

slurmctld -i
slurmd -N localhost
for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then sinfo; exit 0; fi
    sleep 1
done
echo "FAIL: node not idle after 60 s"; sinfo -N -l || true; tail -20 "$STATE"/log/*.log || true
exit 1
