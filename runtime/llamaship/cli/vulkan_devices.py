"""`vulkan-devices`: the child process of `llamaship.detect.vulkan` (hidden, not for use by hand).

It asks the system's Vulkan loader for its devices and prints one JSON line: {"report": {...}}
(the `VulkanReport` fields), or {"missing": "why"} (no loader), {"no_driver": "why"} or
{"failed": "why"}. A driver that hangs
or crashes here takes only this process with it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    # No help= : the command stays out of `llamaship --help`.
    subparsers.add_parser("vulkan-devices", description="(internal) list Vulkan devices as JSON")


def run(args: argparse.Namespace) -> int:
    from llamaship.detect.errors import NoDriver, SourceFailed, SourceMissing
    from llamaship.detect.vulkan_query import query_vulkan

    answer: dict[str, Any]
    try:
        answer = {"report": query_vulkan()}
    except NoDriver as error:
        answer = {"no_driver": str(error)}
    except SourceMissing as error:
        answer = {"missing": str(error)}
    except SourceFailed as error:
        answer = {"failed": str(error)}
    print(json.dumps(answer), flush=True)
    return 0
