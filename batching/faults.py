"""Fault injection for tests: off unless the process starts with EDGE_LLM_FAULTS set.

Some failures cannot be provoked from outside a healthy server (llama.cpp
refusing a decode, the executor thread dying, a slow disk under the task
store). Code on those paths asks ``FAULTS.fire(name)`` or ``FAULTS.delay(name)``;
both cost one falsy check while nothing is armed, which is always the case in
production. With ``EDGE_LLM_FAULTS`` set (its value may be empty), the server
also exposes ``POST /debug/faults`` so a test can arm faults at run time.

Names (where they fire):
    executor_crash   the executor thread raises between steps (then reloads)
    step_crash       a step raises after finishing requests, before publishing
    decode_error     llama_decode fails with a llama.cpp error (the step's sequences fail)
    kv_full          a step of several sequences finds no KV room (half of it is deferred)
    draft_error      the draft model fails mid-proposal (after one draft round)
    step_delay       each step sleeps this many seconds (an executor that is wedged)
    prepare_delay    a request sleeps this long between getting its model and submitting
    store_delay      every task-store operation sleeps this long (a slow SD card)
    embedder_delay   making an embedding context sleeps this long first (a slow load)
    sample_error     sampling one sequence's next token raises (that request fails alone)
    place_error      placing an admitted prompt in the KV cache raises after taking its
                     sequence slot (and its grammar, if any): that request fails alone

Syntax of EDGE_LLM_FAULTS: ``name[=times][@seconds],...``; times defaults to 1,
``*`` means until disarmed.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

ENV = "EDGE_LLM_FAULTS"
NAMES = (
    "executor_crash",
    "step_crash",
    "decode_error",
    "kv_full",
    "draft_error",
    "step_delay",
    "prepare_delay",
    "store_delay",
    "embedder_delay",
    "sample_error",
    "pick_error",
    "speed_noise",
    "place_error",
)


class InjectedFault(RuntimeError):
    """Raised where a test armed a fault; never raised otherwise."""


@dataclass(slots=True)
class Fault:
    times: int | None  # shots left; None: until disarmed
    seconds: float = 0.0  # for the *_delay faults


class Faults:
    def __init__(self, spec: str | None) -> None:
        self.is_enabled = spec is not None
        self._lock = threading.Lock()
        self._armed: dict[str, Fault] = {}
        for item in filter(None, (spec or "").split(",")):
            self.arm(*parse_item(item))

    def arm(self, name: str, times: int | None = 1, seconds: float = 0.0) -> None:
        if name not in NAMES:
            raise ValueError(f"unknown fault {name!r}; known faults are {', '.join(NAMES)}")
        if times is not None and times < 1:
            raise ValueError(f"fault {name}: times must be at least 1 (or null: until disarmed)")
        with self._lock:
            self._armed[name] = Fault(times, seconds)

    def disarm(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._armed.clear()
            else:
                self._armed.pop(name, None)

    def armed(self) -> list[str]:
        with self._lock:
            return sorted(self._armed)

    def fire(self, name: str) -> bool:
        """True (using up one shot) when ``name`` is armed."""
        return bool(self._armed) and self._take(name) is not None

    def check(self, name: str) -> None:
        """Raise ``InjectedFault`` when ``name`` is armed."""
        if self.fire(name):
            raise InjectedFault(f"injected fault: {name}")

    def delay(self, name: str) -> None:
        """Sleep (in this thread) as long as ``name`` says, when armed."""
        if self._armed and (fault := self._take(name)) is not None:
            time.sleep(fault.seconds)

    def seconds(self, name: str) -> float:
        """The armed delay for ``name`` (0 when not armed), using up one shot."""
        if self._armed and (fault := self._take(name)) is not None:
            return fault.seconds
        return 0.0

    def _take(self, name: str) -> Fault | None:
        with self._lock:
            fault = self._armed.get(name)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    del self._armed[name]
            return fault


def parse_item(item: str) -> tuple[str, int | None, float]:
    """``name[=times][@seconds]`` -> (name, times, seconds)."""
    rest, _, seconds = item.strip().partition("@")
    name, _, times = rest.partition("=")
    try:
        count = None if times == "*" else int(times or 1)
        return name, count, float(seconds or 0.0)
    except ValueError:
        raise ValueError(f"{ENV}: cannot read {item!r}; write name[=times][@seconds]") from None


FAULTS = Faults(os.environ.get(ENV))
