"""The device mesh, logical-axis rules and shardings (DESIGN §5).

Mesh axes are (`data`, `fsdp`, `tensor`); -1 in the config fills the rest.
Models name every parameter and activation axis logically; the `mesh.rules`
config maps those names to mesh axes.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")


def mesh_shape(dims, num_devices: int) -> tuple[int, ...]:
  """Resolves one -1 in `dims` so that the product is `num_devices`."""
  dims = [int(d) for d in dims]
  if dims.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dims}")
  known = math.prod(d for d in dims if d != -1)
  if -1 in dims:
    if num_devices % known:
      raise ValueError(f"mesh {dims} does not divide {num_devices} devices")
    dims[dims.index(-1)] = num_devices // known
  if math.prod(dims) != num_devices:
    raise ValueError(
      f"mesh {dict(zip(AXES, dims))} needs {math.prod(dims)} devices, "
      f"have {num_devices}"
    )
  return tuple(dims)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A mesh with explicit axis types from the `mesh` config group."""
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg.shape, len(devices))
  return jax.make_mesh(
    shape,
    AXES,
    axis_types=(jax.sharding.AxisType.Auto,) * len(AXES),
    devices=devices,
  )


def rules(mesh_cfg) -> tuple[tuple[str, object], ...]:
  """Logical-axis rules as tuples (config lists -> hashable tuples)."""
  out = []
  for name, axes in mesh_cfg.rules:
    if isinstance(axes, list):
      axes = tuple(axes)
    out.append((name, axes))
  return tuple(out)


def logical_shardings(abstract_boxed, mesh, mesh_cfg):
  """NamedShardings for a pytree whose leaves carry logical axis names."""
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules(mesh_cfg))


def batch_sharding(mesh) -> NamedSharding:
  """Batches split over (`data`, `fsdp`) along their leading axis."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Host batch (this process's rows) -> global device arrays."""
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, v)
    for k, v in batch.items()
  }
