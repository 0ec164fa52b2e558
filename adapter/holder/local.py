"""Handing the children to the local system (docs/holders.md "Connecting your system"): a
purge command (its standard input one JSON object per line, ``{"patient": ..., "contactpointId":
...}``; on success exit 0 and print ``{"purged": N}`` or ``N`` last, the records it destroyed;
otherwise a non-zero exit, the reason on the last line of standard error) or an HTTP hook (a
POST of ``{"task": ..., "children": [...]}``; a 2xx answer ``{"purged": N}``; otherwise 4xx or
5xx with ``{"reason": ...}``). The command runs without a shell (its words split as a POSIX
shell would, no expansion)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any, Final

import requests

from adapter.holder.agent import REASON_LIMIT, AgentError

# How long a local purge may take before the agent gives up on this run (it resumes).
PURGE_TIMEOUT: Final = 3600.0


@dataclass(frozen=True)
class Purged:
    """The local system's answer: records destroyed, or why it would not or could not."""

    ok: bool
    purged: int = 0
    reason: str | None = None


def _count(text: str) -> int | None:
    """Return the record count in the command's last line of output (None: unreadable)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    try:
        value: Any = json.loads(last)
    except ValueError:
        return None
    value = value.get("purged") if isinstance(value, dict) else value
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def run_command(command: str, task_id: str, children: list[dict[str, str]]) -> Purged:
    """Run the local purge command on ``children``.

    :raises AgentError: it could not be started, or it timed out (the next run tries again).
    """
    stdin = "".join(json.dumps(child) + "\n" for child in children)
    try:
        # The holder's own configured command (its operator's), without a shell.
        done = subprocess.run(shlex.split(command), input=stdin,  # noqa: S603
                              capture_output=True, text=True, timeout=PURGE_TIMEOUT,
                              check=False, env={**os.environ, "PURGE_TASK_ID": task_id})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"the purge command could not run: {type(exc).__name__}") from exc
    if done.returncode != 0:
        reason = next((line.strip() for line in reversed(done.stderr.splitlines())
                       if line.strip()), f"the purge command failed (exit {done.returncode})")
        return Purged(False, reason=reason[:REASON_LIMIT])
    count = _count(done.stdout)
    if count is None:
        raise AgentError("the purge command succeeded but did not print the records it "
                         'destroyed ({"purged": N} or N on its last line)')
    return Purged(True, count)


def call_hook(url: str, task_id: str, children: list[dict[str, str]],
              timeout: float) -> Purged:
    """POST the children to the local system's purge hook.

    :raises AgentError: unreachable, or an answer the agent cannot read.
    """
    try:
        answer = requests.post(url, json={"task": task_id, "children": children},
                               timeout=max(timeout, PURGE_TIMEOUT / 60))
    except requests.RequestException as exc:
        raise AgentError(f"the purge hook is unreachable: {type(exc).__name__}") from exc
    try:
        body: Any = answer.json()
    except ValueError:
        body = {}
    if 200 <= answer.status_code < 300:
        count = _count(json.dumps(body))
        if count is None:
            raise AgentError('the purge hook answered without {"purged": N}')
        return Purged(True, count)
    if 400 <= answer.status_code < 500 or answer.status_code == 501:
        reason = body.get("reason") if isinstance(body, dict) else None
        return Purged(False, reason=str(reason or f"HTTP {answer.status_code}")[:REASON_LIMIT])
    raise AgentError(f"the purge hook failed: HTTP {answer.status_code}")
