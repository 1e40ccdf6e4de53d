"""Run one benchmark row in this (fresh) process: ``python -m benchmarks.worker '<json>'``.

The JSON holds the workload name and its parameters; the result is printed as one JSON line
prefixed with ``RESULT `` (other output, e.g. grad-cam's progress bars, is ignored).
"""

from __future__ import annotations

import json
import sys

import torch

from benchmarks.rows import WORKLOADS

PREFIX = "RESULT "


def main(argv: list[str]) -> None:
    params = json.loads(argv[0])
    torch.set_num_threads(params["threads"])
    params["device"] = torch.device(params["device"])
    result = WORKLOADS[params["workload"]](params)
    print(PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
