"""Static shapes: sizes rounded up to a multiple, so that jit sees few distinct shapes."""


def round_up(value: int, multiple: int = 8) -> int:
  """The smallest positive multiple of `multiple` that is >= `value` (`multiple` for 0)."""
  return max(multiple, -(-int(value) // multiple) * multiple)
