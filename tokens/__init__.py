"""API tokens: stored hashed, shown once, named, expiring, revocable."""
