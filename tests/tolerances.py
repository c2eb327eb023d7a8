"""Comparisons of float32 sums computed in different orders (threads, block sizes, another
backend): the rounding error of a sum is relative to the size of its terms, not of the
result, so an element that cancels to near zero carries an error of the array's scale.
Such arrays are compared with an absolute tolerance proportional to their largest
magnitude (plus the usual relative one), not with a relative tolerance per element."""

import jax
import numpy as np


def scale_of(*trees) -> float:
  """The largest magnitude among every leaf of `trees` (arrays or pytrees of arrays)."""
  leaves = [np.asarray(leaf, np.float64) for tree in trees for leaf in jax.tree.leaves(tree)]
  return max((float(np.abs(leaf).max()) for leaf in leaves if leaf.size), default=0.0)


def assert_close_to_scale(actual, desired, rtol: float, scale_tol: float,
                          scale: float | None = None, err_msg: str = "") -> None:
  """assert_allclose(actual, desired, rtol, atol = scale_tol * scale) over matching pytrees;
  `scale` defaults to the largest magnitude of `desired` (every leaf: a leaf whose values
  all cancel is judged against the scale of the sums it shares terms with)."""
  scale = scale_of(desired) if scale is None else scale
  paths = jax.tree_util.tree_leaves_with_path(desired)
  got_leaves = jax.tree.leaves(actual)
  if len(got_leaves) != len(paths):
    raise AssertionError(f"{err_msg}: {len(got_leaves)} arrays against {len(paths)}")
  for (path, want), got in zip(paths, got_leaves):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol,
                               atol=scale_tol * scale,
                               err_msg=f"{err_msg} {jax.tree_util.keystr(path)}".strip())
