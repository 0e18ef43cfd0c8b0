"""The HTTP surface: routes, request schemas, SSE, OpenAPI and the pages."""
