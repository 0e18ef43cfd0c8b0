"""OpenAI's chat and text completions and model list (embeddings: server.api.embeddings)."""
