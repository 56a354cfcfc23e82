"""Feature functions: each takes an already decoded image and returns a value, no I/O."""
