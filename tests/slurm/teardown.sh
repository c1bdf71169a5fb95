#!/usr/bin/env bash
# Stop the Slurm tests/slurm/setup.sh started: cancel its jobs, stop every slurmd, slurmctld and
# munged, end what is left in the nodes' network namespaces, remove the namespaces, the bridge and
# the nodes' /etc/hosts lines. The config and the installed packages stay, so the next setup.sh
# starts in seconds.
#   --quiet         no closing message (setup.sh calls this before it starts)
#   --network-only  only the namespaces, bridge and /etc/hosts lines
set -uo pipefail

STATE=/var/lib/snakechat-slurm
MARK="# written by snakechat tests/slurm/setup.sh"
BRIDGE=snakechat0
quiet=0 network_only=0
for arg in "$@"; do
    case "$arg" in --quiet) quiet=1 ;; --network-only) network_only=1 ;; *) echo "slurm teardown: unknown option $arg" >&2; exit 2 ;; esac
done

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
}
stop_pidfile() { [ -s "$1" ] && stop "$(cat "$1")"; rm -f "$1"; }

if [ "$network_only" = 0 ] && grep -qsF "$MARK" /etc/slurm/slurm.conf; then
    timeout 10 scancel --full --quiet --user=root 2>/dev/null
    for pidfile in "$STATE"/slurmd-*.pid "$STATE/slurmd.pid"; do stop_pidfile "$pidfile"; done
    stop_pidfile "$STATE/slurmctld.pid"
    stop_pidfile /run/munge/munged.pid
fi

# Job steps (slurmstepd and what it started) outlive slurmd; in a namespace they are ours to end.
if command -v ip >/dev/null; then
    for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^snakechat-/ {print $1}'); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
fi
if grep -qF "$MARK" /etc/hosts; then
    # Written in place, not renamed: /etc/hosts may be a bind mount.
    kept=$(grep -vF "$MARK" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts
fi
[ "$quiet" = 1 ] || echo "slurm teardown: stopped" >&2
