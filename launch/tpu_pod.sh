#!/usr/bin/env bash
# One experiment on a Cloud TPU VM pod slice: copy this checkout to every
# worker, set up the virtual environment there, then run the same command
# on all workers at once (JAX finds the other workers by itself).
#
#   launch/tpu_pod.sh setup CONFIG[:PRESET] WORKDIR   # once per TPU VM
#   launch/tpu_pod.sh run   CONFIG[:PRESET] WORKDIR [--config.x=y ...]
#
# Variables:
#   TPU_NAME   the TPU VM (required)
#   ZONE       its zone (required)
#   PROJECT    the Google Cloud project (default: gcloud's)
#   REMOTE_DIR where the checkout goes on each worker (default: ~/bottomup)
#   JAX_TPU    the pip requirement for TPU jax (default: jax[tpu] at the
#              version locked in requirements.lock)
# WORKDIR must be a path every worker sees (e.g. a gcsfuse or Filestore
# mount): all workers write checkpoints; worker 0 writes metrics/results.
# `run` again resumes from the last checkpoint.
set -euo pipefail
if [ $# -lt 3 ] || { [ "$1" != setup ] && [ "$1" != run ]; }; then
  echo "usage: $0 setup|run CONFIG[:PRESET] WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
action=$1
config=$2
workdir=$3
shift 3
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
remote=${REMOTE_DIR:-'~/bottomup'}
jax_version=$(sed -n 's/^jax==//p' requirements.lock)
jax_tpu=${JAX_TPU:-"jax[tpu]==${jax_version}"}
gcloud_args=(--zone="$ZONE" --worker=all)
if [ -n "${PROJECT:-}" ]; then gcloud_args+=(--project="$PROJECT"); fi

on_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_args[@]}" --command="$1"
}

if [ "$action" = setup ]; then
  tarball=$(mktemp --suffix=.tar.gz)
  git archive --format=tar.gz -o "$tarball" HEAD
  gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":/tmp/bottomup.tar.gz \
    "${gcloud_args[@]}"
  rm -f "$tarball"
  on_all "mkdir -p $remote && tar -xzf /tmp/bottomup.tar.gz -C $remote && \
    cd $remote && python3 -m venv .venv && \
    .venv/bin/pip install -q -r requirements.lock -e . && \
    .venv/bin/pip install -q '$jax_tpu' && \
    .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
  exit 0
fi

printf -v flags ' %q' "$@"
on_all "cd $remote && mkdir -p $workdir && .venv/bin/python -m bottomup.main \
  --config=$config --workdir=$workdir --multiprocess$flags"
