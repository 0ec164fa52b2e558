"""``contactpoint-gateway holder``: the reference purge agent (docs/holders.md). It needs no
gateway configuration or database: it is a client of a gateway over HTTP."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from adapter.holder.agent import AgentError, Settings
from adapter.holder.run import run_round
from adapter.security.policy.phase import command_kind


def _echo(outcomes: list[object]) -> None:
    """Print what a round did, one Task a line (no child is named)."""
    for outcome in outcomes:
        click.echo(" ".join(f"{k}={v}" for k, v in vars(outcome).items() if v is not None))


def _loop(settings: Settings, interval: float) -> None:
    """Run rounds every ``interval`` seconds until SIGTERM or SIGINT; a round that cannot go on
    is reported and tried again at the next."""
    stop = threading.Event()

    def stopping(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    while not stop.is_set():
        try:
            _echo(list(run_round(settings)))
        except AgentError as exc:
            click.echo(f"will retry: {exc}", err=True)
        stop.wait(interval)


@command_kind("meta")  # an HTTP client of a gateway: it never opens this gateway's database
@click.command("holder")
@click.option("--gateway", "base", required=True, help="The gateway's base URL "
              "(e.g. https://contactpoint-gateway.example.org).")
@click.option("--client", "client_id", required=True, help="Your registered client id.")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Your client's private key (a JWK, ES384 or RS384).")
@click.option("--state", "state_file", required=True, type=click.Path(dir_okay=False),
              help="Where the agent keeps its progress (to resume after a crash).")
@click.option("--purge-command", default=None,
              help="Local command: reads the children as NDJSON on stdin, prints "
                   '{"purged": N} (records destroyed); non-zero exit: the reason on stderr.')
@click.option("--purge-url", default=None,
              help='Local HTTP hook: POST {"task", "children"}; 2xx {"purged": N}; '
                   '4xx {"reason"}.')
@click.option("--token-url", default=None, help="Token endpoint; default GATEWAY/auth/token.")
@click.option("--once", is_flag=True, help="One round, then exit (from cron).")
@click.option("--interval", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds between rounds when not --once.")
def holder_command(base: str, client_id: str, key_file: str, state_file: str,
                   purge_command: str | None, purge_url: str | None, token_url: str | None,
                   once: bool, interval: float) -> None:
    """Reference purge agent for a holder's local system: find your purge Task, have the local
    system purge the children, answer the Task (completed with the count, or rejected).

    \f
    :raises click.ClickException: the options, or (with --once) a round that could not finish.
    """
    if bool(purge_command) == bool(purge_url):
        raise click.ClickException("Give exactly one of --purge-command and --purge-url.")
    settings = Settings(base, client_id, Path(key_file), Path(state_file), purge_command,
                        purge_url, token_url=token_url)
    if not once:
        _loop(settings, interval)
        return
    try:
        _echo(list(run_round(settings)))
    except AgentError as exc:
        raise click.ClickException(f"{exc} (nothing is lost: run again to resume)") from exc
