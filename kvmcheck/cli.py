# SPDX-License-Identifier: GPL-2.0-or-later
"""The command line (typer only): options -> runner -> renderer -> exit status.

Exit status: 0 ready, 1 not ready, 2 usage or configuration error.
"""
# No "from __future__ import annotations" here: typer on Python 3.9 reads Annotated only from real objects.

import enum
import os
import sys
from typing import List, Optional

import typer

try:
    from typing import Annotated
except ImportError:  # pragma: no cover - Python < 3.9 is not supported, but be clear
    from typing_extensions import Annotated  # type: ignore

from . import __version__

EXIT_READY, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain usage errors, no box drawing in Kickstart logs
    pretty_exceptions_enable=False,  # plain tracebacks: Kickstart logs must not hold box drawing
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Can this machine run KVM guests well? If not, exactly why, and what to do.",
)


class Format(str, enum.Enum):
    text = "text"
    json = "json"


class ListFormat(str, enum.Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kvmcheck {__version__}")
        raise typer.Exit(EXIT_READY)


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """With no command, run 'check' with its defaults."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(check)


def _use_color(no_color: bool, output: Optional[str], fmt: Format) -> bool:
    if no_color or output or fmt != Format.text or "NO_COLOR" in os.environ:
        return False
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


@app.command()
def check(
    root: Annotated[str, typer.Option("--root", metavar="DIR",
                                      help="Inspect the system under DIR (Kickstart target, captured tree).")] = "/",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Report format.")] = Format.text,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE",
                                                  help="Write the report to FILE instead of stdout.")] = None,
    only: Annotated[Optional[List[str]], typer.Option("--only", metavar="PATTERN",
                                                      help="Run only checks whose id matches (glob, repeatable).")] = None,
    skip: Annotated[Optional[List[str]], typer.Option("--skip", metavar="PATTERN",
                                                      help="Do not run checks whose id matches (glob, repeatable).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings also make the host not ready.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS",
                                           help="Time limit for each check.")] = 5.0,
    min_kernel: Annotated[str, typer.Option("--min-kernel", metavar="VERSION",
                                            help="Minimum kernel release for kernel.version.")] = "2.6.20",
    online: Annotated[bool, typer.Option("--online", help="Also probe each enabled package repository's URL "
                                         "(off by default: a check run needs no network).")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No ANSI colours (NO_COLOR is honoured too).")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of checks that crash.")] = False,
) -> None:
    """Run the checks and report whether this host is ready for KVM."""
    from .context import Settings
    from .parsers import ParseError
    from .parsers.kernel_version import parse_min_version
    from .render import render
    from .runner import SelectionError, run

    if not os.path.isdir(root):
        raise typer.BadParameter(f"{root!r} is not a directory", param_hint="--root")
    try:
        parse_min_version(min_kernel)
    except ParseError as exc:
        raise typer.BadParameter(str(exc), param_hint="--min-kernel")
    try:
        report = run(root, only, skip, timeout=timeout, strict=strict, debug=debug,
                     settings=Settings(min_kernel=min_kernel, check_timeout=timeout, online=online))
    except SelectionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only/--skip")
    text = render(report, fmt.value, color=_use_color(no_color, output, fmt))
    if output:
        try:
            with open(output, "w", encoding="utf-8") as fh:  # the only file kvmcheck ever writes
                fh.write(text)
        except OSError as exc:
            typer.echo(f"kvmcheck: cannot write {output}: {exc.strerror}", err=True)
            raise typer.Exit(EXIT_USAGE)
    else:
        sys.stdout.write(text)
    raise typer.Exit(EXIT_READY if report.ready else EXIT_NOT_READY)


@app.command("list")
def list_checks(
    fmt: Annotated[ListFormat, typer.Option("--format", "-f", help="Listing format.")] = ListFormat.text,
) -> None:
    """List the checks: id, title and what each reads (markdown: the README's table)."""
    import json

    from .registry import load_checks

    checks, errors = load_checks()
    if fmt == ListFormat.json:
        typer.echo(json.dumps([{"id": c.id, "title": c.title, "reads": list(c.reads), "source": c.source}
                               for c in checks], indent=2))
    elif fmt == ListFormat.markdown:
        typer.echo("| id | title | what it checks |\n| --- | --- | --- |")
        for c in checks:
            first = c.doc.split("\n\n", 1)[0].replace("\n", " ").replace("|", "\\|")
            typer.echo(f"| `{c.id}` | {c.title} | {first} |")
    else:
        width = max(len(c.id) for c in checks) if checks else 10
        for c in checks:
            typer.echo(f"{c.id.ljust(width)}  {c.title}")
            typer.echo(f"{' ' * width}  reads: {', '.join(c.reads) or '-'}")
    for e in errors:
        typer.echo(f"kvmcheck: plugin {e.entry_point}: {e.message}", err=True)


@app.command()
def explain(check_id: Annotated[str, typer.Argument(metavar="ID", help="A check id, e.g. cpu.virt-flags.")]) -> None:
    """What a check examines, why it matters, and how to fix a failure."""
    from .registry import load_checks

    checks, _ = load_checks()
    for c in checks:
        if c.id == check_id:
            typer.echo(f"{c.id}: {c.title}\n\n{c.doc}\n\nReads: {', '.join(c.reads) or '-'}")
            return
    typer.echo(f"kvmcheck: no check {check_id!r}; 'kvmcheck list' shows them all", err=True)
    raise typer.Exit(EXIT_USAGE)


def main() -> None:
    app(prog_name="kvmcheck")
