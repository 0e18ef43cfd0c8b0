"""OpenAI's Batch API, run through the server's own routes at a low priority."""
