"""Each module tries one attack and asserts it is refused, audited and changed nothing."""
