"""Task store: durable records of /send_text tasks."""
