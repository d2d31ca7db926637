"""Deciding human tasks from a Slack-compatible chat: messages with buttons, signed clicks."""
