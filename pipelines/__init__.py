"""Pipelines: specs, runs, the execution engine, checkpoints and the audit trail."""
