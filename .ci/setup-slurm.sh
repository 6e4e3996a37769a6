#!/usr/bin/env bash
# A single-node Slurm on 127.0.0.1 for the real-Slurm test (pytest -m slurm): Debian's slurm-wlm
# and munge, the controller and the node daemon on this machine. Idempotent; run as root.
#
# Container sandboxes (gVisor, unprivileged Docker) give no writable cgroup hierarchy, so process
# tracking is by /proc (proctrack/linuxproc) and there is no task binding or accounting. The node
# advertises 8 GPUs as a generic resource, so a script asking `--gpus-per-node=8` (as
# every titanbench script does) is scheduled here. Slurm drops file-less GPUs, so each one is a
# character node aliasing /dev/null (c 1 3); with task/none nothing is ever bound to it.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "setup-slurm.sh: run as root" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
fi

conf_dir=/etc/slurm
log_dir=/var/log/slurm
fake_gpus=/var/spool/slurmd/fake-gpu
mkdir -p "$conf_dir" "$log_dir" /var/spool/slurmctld "$fake_gpus" /run/munge
chown munge:munge /run/munge
chmod 0755 /run/munge

if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if ! munge -n </dev/null >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi

controller_host=$(hostname -s)
cpus=$(nproc)
cat >"$conf_dir/slurm.conf" <<EOF
ClusterName=titanbench-ci
SlurmctldHost=${controller_host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${log_dir}/slurmctld.log
SlurmdLogFile=${log_dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${cpus} Gres=gpu:8 State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
for i in 0 1 2 3 4 5 6 7; do
    [[ -c $fake_gpus/gpu$i ]] || mknod "$fake_gpus/gpu$i" c 1 3
done
cat >"$conf_dir/gres.conf" <<EOF
NodeName=localhost Name=gpu File=${fake_gpus}/gpu[0-7]
EOF
# Debian's plugstack.conf loads optional SPANK plugins (none installed here); keep it as shipped.

running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurmctld.pid; then
    scontrol reconfigure
else
    slurmctld
fi
running /run/slurmd.pid || slurmd -N localhost

for _ in $(seq 60); do
    if sinfo --noheader --nodes=localhost --format=%T 2>/dev/null | grep -qx idle; then
        sinfo
        exit 0
    fi
    scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    sleep 1
done
echo "setup-slurm.sh: the node did not become idle; see ${log_dir}/slurmctld.log and ${log_dir}/slurmd.log" >&2
sinfo >&2 || true
exit 1
