"""OpenAI's Files API, for the Batch API's input and output files."""
