#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests/test_slurm.py: installs Debian's Slurm and
# munge if missing, writes /etc/slurm/slurm.conf for one node (this host) with 8 GPUs declared as a
# generic resource, starts munged, slurmctld and slurmd as root (no systemd, no cgroups) and waits
# until the node is idle. Idempotent: a Slurm this script already started is left running.
# Stop it with tests/slurm/teardown.sh.
#
# Facts this relies on (Debian 12, Slurm 22.05): GPUs declared without `File=` are dropped and
# regular files are refused, but symlinks to /dev/null are accepted as the GPU device files;
# proctrack/linuxproc and task/none need neither cgroups nor systemd.
set -euo pipefail

MARK="# written by snakechat tests/slurm/setup.sh"
STATE=/var/lib/snakechat-slurm
PARTITION=${SNAKECHAT_SLURM_PARTITION:-test}
GPUS=8

log() { echo "slurm setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "needs root (it writes /etc/slurm and starts the daemons)"
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || { log "slurm-wlm and munge are missing and apt-get is not available"; exit 3; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
node_state() { timeout 5 sinfo -h -n "$host" -o %t 2>/dev/null || true; }
node_up() { case "$(node_state)" in idle | mix | alloc) return 0 ;; *) return 1 ;; esac; }

if [ -f /etc/slurm/slurm.conf ] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
    log "/etc/slurm/slurm.conf exists and was not written by this script; not touching it"
    exit 4
fi

if grep -qsF "$MARK" /etc/slurm/slurm.conf && timeout 5 scontrol ping 2>/dev/null | grep -q UP && node_up; then
    log "already running"
    exit 0
fi

# --- munge -------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null || { log "munged did not start"; exit 5; }

# --- config ------------------------------------------------------------------------------------
mkdir -p "$STATE/gpus" "$STATE/ctld" "$STATE/d" /var/log/slurm
for i in $(seq 0 $((GPUS - 1))); do ln -sfn /dev/null "$STATE/gpus/gpu$i"; done
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))

cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=snakechat-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=10
InactiveLimit=0
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >/etc/slurm/gres.conf <<EOF
$MARK
NodeName=$host Name=gpu File=$STATE/gpus/gpu[0-$((GPUS - 1))]
EOF

# --- daemons -----------------------------------------------------------------------------------
stop_pidfile() { [ -s "$1" ] && kill "$(cat "$1")" 2>/dev/null && sleep 1; rm -f "$1"; }
stop_pidfile "$STATE/slurmd.pid"
stop_pidfile "$STATE/slurmctld.pid"
slurmctld -c
slurmd

for _ in $(seq 60); do
    if node_up; then
        log "node $host idle in partition $PARTITION ($cpus CPUs, $GPUS GPUs as gres)"
        exit 0
    fi
    [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || break
    case "$(node_state)" in down* | drain* | unk*) timeout 5 scontrol update nodename="$host" state=resume 2>/dev/null || true ;; esac
    sleep 0.5
done
log "node $host did not become idle; last state: $(node_state)"
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 6
