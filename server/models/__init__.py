"""Models: the registry of loaded models, pull and quantize."""
