#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for tests/test_slurm.py: installs Debian's Slurm and
# munge if missing, starts munged and slurmctld on this host and one slurmd per compute node, each
# node in its own network and UTS namespace (own hostname and IP on a private bridge), with 8 fake
# GPUs declared as a generic resource. Waits until every node is idle. Idempotent: a cluster this
# script already started is left running. Stop it with tests/slurm/teardown.sh.
#
#   bridge snakechat0 10.213.77.1/24 (this host: slurmctld, the submit host)
#     veth -> namespace snakechat-scnode1: eth0 10.213.77.11, hostname scnode1, slurmd
#     veth -> namespace snakechat-scnode2: eth0 10.213.77.12, hostname scnode2, slurmd
#
# The nodes share this host's filesystem (no mount namespace of their own): the munge socket,
# /etc/slurm, the venv and the work directories are the same files everywhere; each slurmd keeps
# its spool, pid and log files apart through %n in slurm.conf. Node names resolve through lines
# this script adds to /etc/hosts (teardown removes them). Where network namespaces cannot be
# created (no CAP_NET_ADMIN, no iproute2), the cluster is one node on this host at 127.0.0.1 and
# $STATE/multinode says why; the tests that need two nodes skip with that reason.
#
# Environment: SNAKECHAT_SLURM_NODES (default 2) compute nodes; SNAKECHAT_SLURM_PARTITION (test)
# is the GPU partition, SNAKECHAT_SLURM_CPU_PARTITION (testcpu) the CPU one; both hold every node.
#
# Facts this relies on (Debian 12, Slurm 22.05): GPUs declared without `File=` are dropped and
# regular files are refused, but symlinks to /dev/null are accepted as the GPU device files;
# proctrack/linuxproc and task/none need neither cgroups nor systemd; with
# SlurmdParameters=config_overrides a node takes the CPUs and memory slurm.conf gives it, so each
# node offers 8 CPUs whatever the machine has (the tests' jobs each ask for one).
set -euo pipefail

MARK="# written by snakechat tests/slurm/setup.sh"
STATE=/var/lib/snakechat-slurm
PARTITION=${SNAKECHAT_SLURM_PARTITION:-test}
CPU_PARTITION=${SNAKECHAT_SLURM_CPU_PARTITION:-testcpu}
NODES=${SNAKECHAT_SLURM_NODES:-2}
GPUS=8
CPUS=8
NET=10.213.77
BRIDGE=snakechat0

log() { echo "slurm setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "needs root (it writes /etc/slurm, creates network namespaces and starts the daemons)"
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || { log "slurm-wlm and munge are missing and apt-get is not available"; exit 3; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurm-wlm munge iproute2 util-linux >/dev/null
fi

host=$(hostname -s)
node_names() { if [ -s "$STATE/multinode" ]; then echo "$host"; else seq -f "scnode%g" 1 "$NODES"; fi; }
node_state() { timeout 5 sinfo -h -n "$1" -o %t 2>/dev/null || true; }
node_up() { case "$(node_state "$1")" in idle | mix | alloc) return 0 ;; *) return 1 ;; esac; }
all_up() { for n in $(node_names); do node_up "$n" || return 1; done; }

if [ -f /etc/slurm/slurm.conf ] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
    log "/etc/slurm/slurm.conf exists and was not written by this script; not touching it"
    exit 4
fi

if grep -qsF "$MARK" /etc/slurm/slurm.conf && [ "$(grep -c '^NodeName=' /etc/slurm/slurm.conf)" = "$(node_names | wc -l)" ] \
    && timeout 5 scontrol ping 2>/dev/null | grep -q UP && all_up; then
    log "already running"
    exit 0
fi

# --- stop what an earlier run left ---------------------------------------------------------------
bash "$(dirname "$0")/teardown.sh" --quiet

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

# --- the nodes' network ------------------------------------------------------------------------
mkdir -p "$STATE/gpus" "$STATE/ctld" "$STATE/d" /var/log/slurm
rm -f "$STATE/multinode"

# One namespace per node: a veth pair from the bridge, the node's address on its end.
make_network() {
    command -v ip >/dev/null && command -v nsenter >/dev/null && command -v unshare >/dev/null || { echo "ip, nsenter or unshare is missing"; return 1; }
    ip link add "$BRIDGE" type bridge 2>&1 || return 1
    ip addr add "$NET.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up || return 1
    for i in $(seq 1 "$NODES"); do
        local ns=snakechat-scnode$i
        ip netns add "$ns" 2>&1 || return 1
        ip link add "scveth$i" type veth peer name eth0 netns "$ns" &&
            ip link set "scveth$i" master "$BRIDGE" && ip link set "scveth$i" up &&
            ip -n "$ns" addr add "$NET.$((10 + i))/24" dev eth0 &&
            ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up || return 1
    done
}
if ! why=$(make_network 2>&1); then
    echo "network namespaces cannot be created here (${why:-unknown error}); the test Slurm is one node on this host" >"$STATE/multinode"
    log "$(cat "$STATE/multinode")"
    bash "$(dirname "$0")/teardown.sh" --quiet --network-only
fi

if [ -s "$STATE/multinode" ]; then
    ctld_addr=127.0.0.1
    nodes_conf="NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=MEM Gres=gpu:$GPUS State=UNKNOWN"
else
    ctld_addr=$NET.1
    nodes_conf=""
    hosts=$(grep -vF "$MARK" /etc/hosts || true)
    for i in $(seq 1 "$NODES"); do
        nodes_conf+="NodeName=scnode$i NodeHostname=scnode$i NodeAddr=$NET.$((10 + i)) CPUs=$CPUS RealMemory=MEM Gres=gpu:$GPUS State=UNKNOWN"$'\n'
        hosts+=$'\n'"$NET.$((10 + i)) scnode$i $MARK"
    done
    # Written in place, not renamed: /etc/hosts may be a bind mount.
    printf '%s\n' "$hosts" >/etc/hosts
fi

# --- config ------------------------------------------------------------------------------------
for i in $(seq 0 $((GPUS - 1))); do ln -sfn /dev/null "$STATE/gpus/gpu$i"; done
for n in $(node_names); do mkdir -p "$STATE/d/$n"; done
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
all_nodes=$(node_names | paste -sd,)

cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=snakechat-test
SlurmctldHost=$host($ctld_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
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
${nodes_conf//MEM/$mem_mb}
PartitionName=$PARTITION Nodes=$all_nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=$CPU_PARTITION Nodes=$all_nodes MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >/etc/slurm/gres.conf <<EOF
$MARK
NodeName=$all_nodes Name=gpu File=$STATE/gpus/gpu[0-$((GPUS - 1))]
EOF

# --- daemons -----------------------------------------------------------------------------------
slurmctld -c
if [ -s "$STATE/multinode" ]; then
    slurmd
else
    # slurmd finds its node by the namespace's hostname (NodeHostname); it daemonizes inside.
    for i in $(seq 1 "$NODES"); do
        nsenter --net="/run/netns/snakechat-scnode$i" -- unshare --uts -- sh -c "hostname scnode$i && exec slurmd"
    done
fi

for _ in $(seq 60); do
    if all_up; then
        log "nodes $all_nodes idle in partitions $PARTITION and $CPU_PARTITION ($CPUS CPUs, $GPUS GPUs as gres each)"
        exit 0
    fi
    [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || break
    for n in $(node_names); do
        case "$(node_state "$n")" in down* | drain* | unk*) timeout 5 scontrol update nodename="$n" state=resume 2>/dev/null || true ;; esac
    done
    sleep 0.5
done
log "nodes did not become idle; last states: $(timeout 5 sinfo -h -o '%n %t' 2>/dev/null | paste -sd' ')"
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd-*.log >&2 || true
exit 6
