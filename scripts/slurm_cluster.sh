#!/usr/bin/env bash
# A throwaway single-node SLURM cluster for trying eqtrain's cluster path and for its tests.
#
#   scripts/slurm_cluster.sh start [DIR]   start munged, slurmctld and slurmd with everything in DIR
#                                          (default: a new temporary directory); prints the line
#                                          `export SLURM_CONF=DIR/slurm.conf` on stdout
#   scripts/slurm_cluster.sh status [DIR]  the daemons' pids and sinfo
#   scripts/slurm_cluster.sh stop [DIR]    cancel this cluster's jobs, stop the three daemons
#
# DIR defaults to the directory of $SLURM_CONF for status and stop, so
#   eval "$(scripts/slurm_cluster.sh start)" ... scripts/slurm_cluster.sh stop
# is a whole session. Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) and
# root (slurmd starts jobs as their user). No systemd: the daemons are plain background
# processes; config, state, spool, logs, munge key and socket all live in DIR, the ports are
# free ones picked at start, so two clusters on one machine do not meet. munged wants every
# directory above its socket searchable by all (a DIR under a mode-700 directory will not do).
# stop ends only the processes whose pid files are in DIR (and checks each still runs from DIR).
#
# The config, and why (docs/slurm.md):
# - partitions `low` (default) and `high`: a `high` job preempts a `low` one (PreemptMode=REQUEUE);
# - DefMemPerCPU: without it a job without --mem holds the whole node's memory;
# - AuthInfo=cred_expire=10, sched_interval=5, bf_interval=5: a requeued job restarts in ~15 s, not ~150 s;
# - TaskPlugin=task/none, ProctrackType=proctrack/linuxproc: no cgroups needed (nor CPU binding).
set -euo pipefail

die() {
    echo "slurm_cluster: $*" >&2
    exit 1
}

conf_dir() {  # DIR from the argument, else from $SLURM_CONF
    if [[ -n "${1:-}" ]]; then
        readlink -f "$1"
    elif [[ -n "${SLURM_CONF:-}" ]]; then
        dirname "$(readlink -f "$SLURM_CONF")"
    else
        die "no DIR given and SLURM_CONF is not set"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll COMMAND (an event), never a fixed sleep
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "slurm_cluster: still waiting for $what after $limit s" >&2 && return 1; }
        sleep 0.1
    done
}

node_idle() {  # one line per partition, each `idle`
    [[ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" == idle ]]
}

show_logs() {
    local dir=$1 f
    for f in "$dir"/log/*.log; do
        [[ -f "$f" ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
}

write_config() {
    local dir=$1 node ctld_port slurmd_port
    node=$(slurmd -C | head -n 1 | sed -e 's/ *$//')  # NodeName=host CPUs=... RealMemory=...
    [[ "$node" == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    while [[ "$slurmd_port" == "$ctld_port" ]]; do slurmd_port=$(free_port); done
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm_cluster.sh: a throwaway single-node cluster, everything in $dir.
ClusterName=eqtrain
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=low Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2
EOF
}

start() {
    local dir t0=$EPOCHREALTIME
    [[ $EUID -eq 0 ]] || die "start needs root (slurmd runs jobs as their user)"
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y slurm-wlm munge"
    done
    if [[ -n "${1:-}" ]]; then
        mkdir -p "$1"
        dir=$(readlink -f "$1")
    else
        dir=$(mktemp -d -t eqtrain-slurm.XXXXXX)
    fi
    [[ ! -e "$dir/slurm.conf" ]] || die "$dir already holds a cluster (stop it, or pass a new DIR)"
    # munged wants the socket's directories searchable by all, and none of them writable by others
    chmod 711 "$dir"
    mkdir -p "$dir"/{munge,state,spool,run,log}
    chmod 711 "$dir/munge"
    export SLURM_CONF=$dir/slurm.conf
    write_config "$dir"

    mungekey --create --keyfile="$dir/munge/munge.key" 2>/dev/null ||  # munge < 0.5.14 has no mungekey
        { dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none && chmod 400 "$dir/munge/munge.key"; }
    munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" ||
        { show_logs "$dir"; die "munged did not start"; }
    slurmctld -f "$SLURM_CONF" || { show_logs "$dir"; die "slurmctld did not start"; }
    slurmd -f "$SLURM_CONF" || { show_logs "$dir"; die "slurmd did not start"; }
    if ! wait_until 60 "the node to be idle" node_idle; then
        show_logs "$dir"
        sinfo -N >&2 || true
        die "the node is not idle after 60 s (the daemons are still running: $0 stop $dir)"
    fi
    printf 'slurm_cluster: node idle %.1f s after start; config, state and logs in %s\n' \
        "$(awk "BEGIN { print $EPOCHREALTIME - $t0 }")" "$dir" >&2
    echo "export SLURM_CONF=$SLURM_CONF"
}

our_pid() {  # the pid in a pid file, if that process still runs with DIR on its command line
    local dir=$1 file=$2 pid
    [[ -f "$dir/run/$file" ]] || return 1
    pid=$(<"$dir/run/$file")
    [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir" || return 1
    echo "$pid"
}

stop_daemons() {  # stop_daemons DIR NAME...: SIGTERM to each, SIGKILL to any still there after 30 s
    local dir=$1 name pid pids=()
    shift
    for name in "$@"; do
        if pid=$(our_pid "$dir" "$name.pid"); then
            kill -TERM "$pid"
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        wait_until 30 "pid $pid to exit" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    done
}

stop() {
    local dir
    dir=$(conf_dir "${1:-}")
    [[ -f "$dir/slurm.conf" ]] || die "$dir holds no cluster (no slurm.conf)"
    export SLURM_CONF=$dir/slurm.conf
    if our_pid "$dir" slurmctld.pid >/dev/null; then  # jobs first: their steps would outlive slurmd
        scancel --user="$(id -un)" 2>/dev/null || true
        wait_until 60 "the jobs to end" bash -c '[[ -z "$(squeue -h -o %i 2>/dev/null)" ]]' ||
            echo "slurm_cluster: jobs still listed after 60 s; stopping anyway" >&2
    fi
    stop_daemons "$dir" slurmd slurmctld  # together (each takes 1-2 s to shut down), munged last
    stop_daemons "$dir" munged
    echo "slurm_cluster: stopped the cluster in $dir (files kept)" >&2
}

status() {
    local dir name pid
    dir=$(conf_dir "${1:-}")
    export SLURM_CONF=$dir/slurm.conf
    for name in munged slurmctld slurmd; do
        if pid=$(our_pid "$dir" "$name.pid"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
    done
    sinfo
}

case "${1:-}" in
start | stop | status) "$@" ;;
*)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
