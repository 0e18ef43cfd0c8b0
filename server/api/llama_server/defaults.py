"""A model's server-wide sampling defaults on llama-server's native routes.

llama-server takes ``--seed``, ``--temp`` and ``--n-predict`` at start-up and
uses them for every request that leaves those fields out, so a streamed and an
unstreamed request, or a prompt sent as text and as its token ids, draw the
same. Here a model's ``defaults`` (config.json) play that part: they are
written into a body before it is validated, so a request's own value always
wins; the output limit is also an upper bound, as ``--n-predict`` is.
"""

from __future__ import annotations

from collections.abc import Callable

from server.model_settings import SamplingDefaults
from server.settings import Config


def model_defaults(config: Config, name: object) -> SamplingDefaults:
    """The defaults of the model a request names (or of the default model)."""
    model = config.model_named(name if isinstance(name, str) else None)
    return config.models[model].defaults if model is not None else SamplingDefaults()


def filler(config: Config) -> Callable[[object], str | None]:
    """A ``read_body`` precheck that adds the model's defaults a body leaves out."""

    def fill(data: object) -> None:
        if not isinstance(data, dict):
            return  # the schema's own message says what is wrong
        defaults = model_defaults(config, data.get("model"))
        given = {
            "seed": defaults.seed,
            "temperature": defaults.temperature,
            "n_predict": defaults.max_tokens,
        }
        if "max_tokens" in data:  # the same limit under OpenAI's name
            given.pop("n_predict")
        for field, value in given.items():
            if value is not None and field not in data:
                data[field] = value

    return fill


def capped(limit: int, defaults: SamplingDefaults) -> int:
    """``limit`` lowered to the model's output limit, as llama-server caps n_predict."""
    return limit if defaults.max_tokens is None else min(limit, defaults.max_tokens)
