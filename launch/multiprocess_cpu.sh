#!/usr/bin/env bash
# Runs NPROC local CPU processes through JAX's real multi-host path
# (jax.distributed on 127.0.0.1, gloo collectives), each with
# DEVICES_PER_PROC fake devices; the global mesh spans all of them.
#
#   launch/multiprocess_cpu.sh NPROC CONFIG[:PRESET] WORKDIR [--config.x=y ...]
#
# Variables: DEVICES_PER_PROC (default 4), PORT (default: a free one).
# Process 0's output goes to the terminal; process i's to WORKDIR/proc_i.log.
# Exits non-zero if any process fails. Rerunning resumes, as for one process.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 NPROC CONFIG[:PRESET] WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
nproc=$1
config=$2
workdir=$3
shift 3
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: NPROC must be a positive integer, got '$nproc'" >&2
  exit 2
fi
devices=${DEVICES_PER_PROC:-4}
port=${PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$workdir"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

for ((i = 0; i < nproc; i++)); do
  env JAX_PLATFORMS=cpu \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
    JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
    BOTTOMUP_NUM_PROCESSES="$nproc" \
    BOTTOMUP_PROCESS_ID="$i" \
    python -m bottomup.main --config="$config" --workdir="$workdir" \
    --multiprocess "$@" \
    >"$( [ "$i" -eq 0 ] && echo /dev/stdout || echo "$workdir/proc_$i.log")" 2>&1 &
  pids+=($!)
done

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "$0: process $i failed (see ${workdir}/proc_$i.log)" >&2
    status=1
    cleanup
  fi
done
exit $status
