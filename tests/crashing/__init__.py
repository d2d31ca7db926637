"""A Django app for crash tests: with FIREFLY_TEST_CRASH_AFTER_COMMIT set, the process
kills itself (SIGKILL) right after a step's transaction that wrote outbox rows commits,
where it would have sent the relay message (tests/webhooks/test_outbox_crash.py)."""
