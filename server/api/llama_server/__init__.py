"""llama-server's native routes: /completion, /tokenize, /props, /health, ..."""
