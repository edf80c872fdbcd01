#!/usr/bin/env bash
# Run one experiment locally; rerunning the same command resumes it.
#   launch/local.sh experiments/multiplication.py:quickstart runs/mult4 [--config.x=y ...]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG[:PRESET] WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
exec python -m bottomup.main --config="$config" --workdir="$workdir" "$@"
