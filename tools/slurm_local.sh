#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests marked `slurm` (make test-slurm) and for trying the
# Reproduce chapter's cluster commands: munged, MariaDB + slurmdbd (accounting: sacct, accounts), slurmctld
# and slurmd, configured for this host (no cgroups, no systemd), every file under one state folder.
#
#   tools/slurm_local.sh start [DIR]    start it (DIR default $STABKIT_SLURM_DIR, else /tmp/stabkit-slurm)
#   tools/slurm_local.sh stop [DIR]     stop its daemons (by their pid files) and delete DIR
#   tools/slurm_local.sh status [DIR]   exit 0 when it answers (sinfo), else 1
#   tools/slurm_local.sh env [DIR]      print `export SLURM_CONF=...`: eval "$(tools/slurm_local.sh env)"
#
# Debian packages: slurmctld slurmd slurm-client slurmdbd munge mariadb-server (`install` installs them when
# run as root). Partitions: `debug` (default, no time limit) and `short` (5 minutes), one node with this
# machine's CPUs and one GPU slot (gres gpu:1, not a real device); account `stabkit` for the user who starts
# it (accounting enforces associations, so a job with an unknown account is refused).
set -euo pipefail

PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
cmd="${1:-}"
D="${2:-${STABKIT_SLURM_DIR:-/tmp/stabkit-slurm}}"

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

missing_binaries() {
  local b out=""
  for b in sbatch squeue sacct sacctmgr scontrol sinfo slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || out="$out $b"
  done
  echo "$out"
}

free_port() {  # a TCP port nobody listens on now (ports are per cluster: two clusters can run side by side)
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local t="$1" what="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { echo "slurm_local.sh: $what did not come up in ${t} s; logs in $D/log" >&2; \
                                   tail -n 20 "$D"/log/*.log >&2 || true; return 1; }
    sleep 0.5
  done
}

do_install() {
  [ -z "$(missing_binaries)" ] && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing:$(missing_binaries); install (Debian) $PACKAGES"
  # a policy-rc.d keeps Debian from starting the packaged services (this script starts its own daemons)
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"
  fi
  local t0=$SECONDS rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES \
      >/dev/null; } || rc=$?
  [ -z "$policy" ] || rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install $PACKAGES failed ($rc)"
  echo "slurm_local.sh: installed $PACKAGES in $((SECONDS - t0)) s"
}

do_start() {
  [ -z "$(missing_binaries)" ] || die "missing:$(missing_binaries) (Debian: $0 install, as root)"
  if [ -f "$D/etc/slurm.conf" ] && SLURM_CONF="$D/etc/slurm.conf" sinfo >/dev/null 2>&1; then
    echo "slurm_local.sh: already running in $D"; return 0
  fi
  [ ! -e "$D" ] || do_stop
  local user host cpus mem_mb t0=$SECONDS
  user="$(id -un)"; host="$(hostname -s)"
  cpus="$(nproc)"
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  mkdir -p "$D" && chmod 711 "$D"  # munged wants its socket reachable
  mkdir -p "$D"/{etc,log,run,state,spool,munge,db}
  export SLURM_CONF="$D/etc/slurm.conf"
  PATH="$PATH:/usr/sbin"

  # munge: its own key and socket (the auth plugin is pointed at the socket by AuthInfo)
  dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$D/munge/munge.key"
  munged --force --num-threads=4 --key-file="$D/munge/munge.key" --socket="$D/munge/munge.sock" --pid-file="$D/run/munged.pid" \
         --log-file="$D/log/munged.log" --seed-file="$D/munge/munged.seed"

  # MariaDB for slurmdbd, on a private datadir, socket and loopback port
  local dbport dbdport ctlport slurmdport
  dbport=$(free_port); dbdport=$(free_port); ctlport=$(free_port); slurmdport=$(free_port)
  mariadb-install-db --no-defaults --datadir="$D/db" --user="$user" --auth-root-authentication-method=socket \
                     --skip-test-db >"$D/log/mariadb-install.log" 2>&1
  (mariadbd --no-defaults --datadir="$D/db" --socket="$D/run/mysql.sock" --port="$dbport" \
            --bind-address=127.0.0.1 --user="$user" --pid-file="$D/run/mariadbd.pid" \
            --log-error="$D/log/mariadbd.log" --innodb-buffer-pool-size=32M >/dev/null 2>&1 &)
  wait_for 60 mariadbd mariadb --no-defaults --socket="$D/run/mysql.sock" -u "$user" -e "select 1"
  local dbpass; dbpass="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  mariadb --no-defaults --socket="$D/run/mysql.sock" -u "$user" -e \
    "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

  cat >"$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.sock
DbdHost=localhost
DbdPort=$dbdport
SlurmUser=$user
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$dbport
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$D/etc/slurmdbd.conf"

  cat >"$D/etc/slurm.conf" <<EOF
ClusterName=stabkit
SlurmctldHost=$host
SlurmctldPort=$ctlport
SlurmdPort=$slurmdport
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/slurmd-%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
# no cgroups, no systemd: processes are tracked through /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# quick scheduling and reaping, so that the tests do not wait
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=20
KillWait=5
MinJobAge=300
InactiveLimit=0
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbdport
# the munge socket of the connection to slurmdbd (AuthInfo does not cover it)
AccountingStoragePass=$D/munge/munge.sock
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
# one GPU as a scheduled resource (its "device" is /dev/null), so that --gpus-per-node=1 is scheduled as on a
# GPU cluster (one such job at a time); the jobs see no real GPU and run on the CPU
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=$host MaxTime=5 State=UP
EOF

  echo "NodeName=$host Name=gpu File=/dev/null" >"$D/etc/gres.conf"
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -i show cluster
  sacctmgr -i add cluster stabkit >/dev/null
  sacctmgr -i add account stabkit Description=stabkit Organization=stabkit >/dev/null
  sacctmgr -i add user "$user" DefaultAccount=stabkit >/dev/null
  slurmctld
  wait_for 60 slurmctld scontrol ping
  slurmd
  wait_for 60 "slurmd (node $host idle)" bash -c "sinfo -h -n $host -o %t | grep -q idle"
  echo "slurm_local.sh: cluster stabkit up in $((SECONDS - t0)) s ($host, $cpus CPUs, ${mem_mb} MB; state in $D)"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop_pid() {  # stop_pid NAME: TERM the daemon of this cluster named in its pid file, KILL after 15 s
  local f pid
  for f in "$D"/run/"$1"*.pid; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

do_stop() {
  [ -d "$D" ] || return 0
  [ -f "$D/etc/slurm.conf" ] || [ -d "$D/run" ] || die "$D is no cluster folder of this script; not deleting it"
  if [ -f "$D/etc/slurm.conf" ]; then  # cancel what still runs, so that slurmd leaves no job process behind
    SLURM_CONF="$D/etc/slurm.conf" timeout 20 scancel --full --user "$(id -un)" 2>/dev/null || true
  fi
  stop_pid slurmd; stop_pid slurmctld; stop_pid slurmdbd; stop_pid mariadbd; stop_pid munged
  rm -rf "$D"
  echo "slurm_local.sh: stopped ($D removed)"
}

case "$cmd" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) [ -f "$D/etc/slurm.conf" ] && SLURM_CONF="$D/etc/slurm.conf" sinfo ;;
  env) echo "export SLURM_CONF=$D/etc/slurm.conf" ;;
  *) die "usage: $0 install|start|stop|status|env [DIR]" ;;
esac
