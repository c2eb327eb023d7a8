"""Exact top-k search (sharded, chunked) and the term-level scoring built on it."""
