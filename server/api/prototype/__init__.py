"""The prototype JSON API: /generate, background tasks, health, model load/unload."""
