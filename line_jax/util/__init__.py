"""Small helpers every layer may use: files, logs, shapes, host memory, text clauses."""
