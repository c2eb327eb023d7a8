"""pytest runs absltest cases without absl's main: mark flags parsed so that
`self.create_tempdir()` and flag defaults work; keep matplotlib off-screen."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
