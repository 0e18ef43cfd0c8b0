"""The HTTP-free serving core that every API family shares (issue 40).

Rules that must read the same in every family live here once: the output
limit, the finish reasons, the failures a reply ends with, structured output
and logprobs; ``chat/`` holds the chat machinery (messages, prompt, reasoning,
reply parser, tool calls, how a reply ends). Nothing in this
package imports starlette or ``server.api``: families translate to and from
the wire, this package decides.
"""
