"""Anthropic Messages: /v1/messages and token counting."""
