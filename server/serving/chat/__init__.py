"""Chat machinery without HTTP: tool calls, the reply parser (and, as they move, the
prompt and reasoning set-up) that every chat family shares."""
