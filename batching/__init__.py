"""Asyncio side of serving: the request object, the batching rule, the batcher."""
