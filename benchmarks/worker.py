"""Run one benchmark row in a fresh child process, forked from the runner.

The runner imports torch, torchvision and the engine once and runs no tensor operation
itself; each row then runs in a child forked from it, so that every row starts from the
same clean state and its peak memory is its own, without paying ~5 s of imports per row.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.rows import WORKLOADS


def execute(params: dict[str, Any]) -> dict[str, Any]:
    """Run the row described by ``params`` in this process."""
    params = {**params, "device": torch.device(params["device"])}
    torch.set_num_threads(params["threads"])
    return WORKLOADS[params["workload"]](params)


def _child(function: Callable[[Any], Any], argument: Any, connection: Any) -> None:
    sys.stderr = open(os.devnull, "w")  # silences grad-cam's progress bars
    try:
        connection.send(("ok", function(argument)))
    except BaseException as error:  # reported to the runner as the row's error
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        connection.send(("error", last))


def in_child(function: Callable[[Any], Any], argument: Any, timeout_s: float) -> Any:
    """``function(argument)`` in a forked child; RuntimeError with the child's error."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(function, argument, sender))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise RuntimeError(f"timed out after {timeout_s:.0f} s")
        status, payload = receiver.recv()
    except EOFError:
        raise RuntimeError(f"the row's process died (exit code {process.exitcode})") from None
    finally:
        if process.is_alive() and not receiver.poll(0):
            process.kill()
        process.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload
