"""Hashes of string lists, as cache keys are made of them."""


def hash_strings(h, strings) -> None:
  """Feeds `strings` into the hash `h` (a hashlib object): their count, then each one's UTF-8
  bytes followed by a NUL, so that no two different lists feed the same bytes."""
  h.update(str(len(strings)).encode())
  for s in strings:
    h.update(str(s).encode("utf-8") + b"\x00")
