#!/usr/bin/env bash
# Stop the Slurm tests/slurm/setup.sh started: cancel its jobs, stop slurmd, slurmctld and munged.
# The config and the installed packages stay, so the next setup.sh starts in a second.
set -uo pipefail

STATE=/var/lib/snakechat-slurm
MARK="# written by snakechat tests/slurm/setup.sh"

grep -qsF "$MARK" /etc/slurm/slurm.conf || { echo "slurm teardown: no Slurm of ours configured" >&2; exit 0; }

scancel --full --quiet --user=root 2>/dev/null
stop() {
    local pidfile=$1
    [ -s "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
}
stop "$STATE/slurmd.pid"
stop "$STATE/slurmctld.pid"
stop /run/munge/munged.pid
echo "slurm teardown: stopped" >&2
