"""The HTTP surface: one folder per API family (``schemas`` for its wire bodies,
``routes`` for its replies and frames), and at this level only what the families
share: the route table (``routes``), JSON bodies and replies, body fields, the chat
body, SSE, errors, middleware, llama.cpp's extension fields, OpenAPI and the pages."""
