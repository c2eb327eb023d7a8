"""Concept lists as the list CNN reads them: padded into ids over a table of distinct entries
(`pack_lists`), and packed for training (`pack_batches`: a batch's entries back to back in a
buffer of fixed capacity, so that the convolution runs on real entries only)."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def list_segments(dataset, pair_idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(offsets [N+1], concept indices, negated flags) of the lists of `pair_idx`, in order."""
  pair_idx = np.asarray(pair_idx, np.int64)
  starts = dataset.concept_offsets[pair_idx]
  lengths = dataset.concept_offsets[pair_idx + 1] - starts
  offsets = np.zeros(len(pair_idx) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  flat_pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
  return offsets, dataset.concept_flat[flat_pos], dataset.negated_flat[flat_pos]


@dataclasses.dataclass(frozen=True)
class Lists:
  """The evaluated pairs' concept lists as ids into a table of distinct entries.

  Attributes:
    ids: [N, L] int32 entry ids (0 where padded).
    mask: [N, L] bool, True on real entries.
    entry_concept: [U] concept index of each distinct entry.
    entry_negated: [U] its negation flag.
  """
  ids: np.ndarray
  mask: np.ndarray
  entry_concept: np.ndarray
  entry_negated: np.ndarray


def pack_lists(offsets: np.ndarray, flat: np.ndarray, negated: np.ndarray,
               drop: Optional[np.ndarray] = None) -> Tuple[Lists, int]:
  """Pads the segments `flat[offsets[i]:offsets[i+1]]` into a `Lists`.

  Args:
    offsets: [N+1] segment bounds.
    flat, negated: the concept indices and their negation flags.
    drop: optional [C] bool; concepts marked there are removed from the lists.

  Returns:
    (the lists, number of entries removed by `drop`).
  """
  flat = np.asarray(flat, np.int64)
  negated = np.asarray(negated, bool)
  owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  keep = np.ones(len(flat), bool) if drop is None else ~np.asarray(drop, bool)[flat]
  removed = int((~keep).sum())
  flat, negated, owner = flat[keep], negated[keep], owner[keep]
  keys = flat * 2 + negated
  unique, entry = np.unique(keys, return_inverse=True)
  lengths = np.bincount(owner, minlength=len(offsets) - 1)
  width = max(1, int(lengths.max()) if len(lengths) else 1)
  starts = np.r_[0, np.cumsum(lengths)[:-1]]
  position = np.arange(len(flat)) - starts[owner]
  ids = np.zeros((len(lengths), width), np.int32)
  mask = np.zeros((len(lengths), width), bool)
  ids[owner, position] = entry
  mask[owner, position] = True
  return Lists(ids, mask, (unique // 2).astype(np.int64), (unique % 2).astype(bool)), removed


def packing_capacity(lengths: np.ndarray, batch: int, width: int) -> int:
  """Entries per packed batch: the mean list length x batch, 10% over, rounded up to 32,
  at least one full list and at most `batch` full lists. A batch takes lists in order until
  the next would overflow it, so a run of long lists makes a batch a little smaller."""
  mean = float(np.mean(lengths)) if len(lengths) else float(width)
  capacity = int(np.ceil(1.1 * mean * batch / 32.0)) * 32
  return int(min(max(capacity, width, 1), max(batch * width, 1)))


def _split_batches(rows: np.ndarray, lengths: np.ndarray, batch: int,
                   capacity: int) -> List[np.ndarray]:
  """Consecutive runs of `rows` with at most `batch` rows and `capacity` entries each."""
  ends = np.cumsum(lengths[rows])
  out, start = [], 0
  while start < len(rows):
    before = ends[start - 1] if start else 0
    end = min(start + batch, int(np.searchsorted(ends, before + capacity, side="right")))
    end = max(end, start + 1)
    out.append(rows[start:end])
    start = end
  return out


def pack_batches(ids: np.ndarray, mask: np.ndarray, orders: Sequence[np.ndarray], batch: int,
                 capacity: int) -> Dict[str, np.ndarray]:
  """One epoch of packed batches for each seed, `orders[s]` being seed s's row order.

  Returns arrays with leading [S, steps] axes: rows and w [.., B], flat_ids [.., C],
  local_idx and local_mask [.., B, L]. Seeds with fewer batches get all-zero-weight ones.
  """
  lengths = mask.sum(axis=1)
  per_seed = [_split_batches(np.asarray(o, np.int64), lengths, batch, capacity)
              for o in orders]
  steps = max(1, max(len(b) for b in per_seed))
  seeds, width = len(orders), ids.shape[1]
  out = {"rows": np.zeros((seeds, steps, batch), np.int32),
         "w": np.zeros((seeds, steps, batch), np.float32),
         "flat_ids": np.zeros((seeds, steps, capacity), np.int32),
         "local_idx": np.zeros((seeds, steps, batch, width), np.int32),
         "local_mask": np.zeros((seeds, steps, batch, width), bool)}
  for s, batches in enumerate(per_seed):
    for t, rows in enumerate(batches):
      m = mask[rows]
      k = len(rows)
      n = int(m.sum())
      out["rows"][s, t, :k] = rows
      out["w"][s, t, :k] = 1.0
      out["flat_ids"][s, t, :n] = ids[rows][m]
      out["local_idx"][s, t, :k] = np.where(m, np.cumsum(m.ravel()).reshape(m.shape) - 1, 0)
      out["local_mask"][s, t, :k] = m
  return out
