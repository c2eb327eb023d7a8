"""The teacher-embedding cache: its folder format, export with a teacher, precomputed and synthetic rows."""
