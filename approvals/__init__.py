"""Approvals: human tasks, decisions and the reviewer pages."""
