"""Hardware behind small protocols. Real backends import their vendor library lazily, inside the backend."""
