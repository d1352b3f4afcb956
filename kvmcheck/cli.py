# SPDX-License-Identifier: GPL-2.0-or-later
"""The command line (typer only): options -> runner -> renderer -> exit status.

Exit status (kvmcheck.model.ExitStatus): 0 ready, 1 not ready, 2 usage or configuration error,
3 unknown (no evidence for a verdict; with -f nagios also every usage error and crash).
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
from .model import ExitStatus

EXIT_READY, EXIT_NOT_READY, EXIT_USAGE = ExitStatus.READY, ExitStatus.NOT_READY, ExitStatus.USAGE
EXIT_NAGIOS_UNKNOWN = ExitStatus.UNKNOWN  # -f nagios: usage errors and crashes are UNKNOWN, since 2 means CRITICAL

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain usage errors, no box drawing in Kickstart logs
    pretty_exceptions_enable=False,  # plain tracebacks: Kickstart logs must not hold box drawing
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Can this machine run KVM guests well? If not, exactly why, and what to do. "
         "With no command, runs 'check' (whose options may be given without the command).",
)


class Format(str, enum.Enum):
    text = "text"
    json = "json"
    html = "html"
    markdown = "markdown"
    junit = "junit"
    prometheus = "prometheus"
    nagios = "nagios"


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


def _use_color(no_color: bool, output: Optional[str], fmt: Format, template: Optional[str]) -> bool:
    if no_color or output or fmt != Format.text or template or "NO_COLOR" in os.environ:
        return False
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


@app.command()
def check(
    ctx: typer.Context,
    root: Annotated[str, typer.Option("--root", metavar="DIR",
                                      help="Inspect the system under DIR (Kickstart target, captured tree).")] = "/",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Report format.")] = Format.text,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE",
                                                  help="Write the report to FILE instead of stdout.")] = None,
    template: Annotated[Optional[str], typer.Option("--template", metavar="FILE",
                                                    help="Render with your own Jinja template (see README).")] = None,
    config: Annotated[Optional[str], typer.Option("--config", metavar="FILE", help="Settings, severity overrides and "
                                                  "ignores in TOML (default: /etc/kvmcheck/config.toml when present).")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", metavar="NAME",
                                                   help="What the host is for ('kvmcheck profiles' lists them).")] = None,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 whatever the verdict (report-only runs, "
                                            "such as a Kickstart %post); usage errors still exit 2.")] = False,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Text format: print only the verdict, why, and the "
                                        "checks to fix first.")] = False,
) -> None:
    """Run the checks and report whether this host is ready for KVM.

    Exit status: 0 ready, 1 not ready, 2 usage or configuration error, 3 unknown (nothing failed, but an
    essential check could not decide, or the root holds no system). -f nagios: 0 OK, 1 WARNING, 2 CRITICAL,
    3 UNKNOWN.
    """
    from .context import Settings
    from .parsers import ParseError
    from .parsers.kernel_version import parse_min_version
    from .render import render
    from .runner import SelectionError, run

    if os.path.isfile(root) and root.endswith((".tar.gz", ".tgz", ".tar")):
        # A snapshot archive ('kvmcheck snapshot'): audit it offline, unpacked safely into a private directory.
        from .snapshot import ArchiveError, open_archive

        try:
            with open_archive(root) as unpacked:
                check(ctx, root=unpacked, fmt=fmt, output=output, template=template, config=config, profile=profile,
                      exit_zero=exit_zero, only=only, skip=skip, strict=strict, timeout=timeout,
                      min_kernel=min_kernel, online=online, no_color=no_color, debug=debug, quiet=quiet)
        except ArchiveError as exc:  # unsafe, oversized or corrupt: refuse, never half-audit
            raise typer.BadParameter(str(exc), param_hint="--root")
        return
    if not os.path.isdir(root):
        raise typer.BadParameter(f"{root!r} is not a directory or a snapshot archive", param_hint="--root")
    if quiet and (fmt != Format.text or template is not None):
        raise typer.BadParameter("-q prints the text report's verdict block; it does not apply to --format "
                                 f"{fmt.value} or --template", param_hint="--quiet")
    if template is not None and not os.path.isfile(template):
        raise typer.BadParameter(f"{template!r} is not a file", param_hint="--template")
    try:
        parse_min_version(min_kernel)
    except ParseError as exc:
        raise typer.BadParameter(str(exc), param_hint="--min-kernel")
    from .config import ConfigError

    try:
        report = run(root, only, skip, timeout=timeout, strict=strict, debug=debug, config=config, profile=profile,
                     settings=Settings(min_kernel=min_kernel, check_timeout=timeout, online=online))
    except SelectionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only/--skip")
    except ConfigError as exc:  # the file, the line and what was expected; never a traceback
        if fmt == Format.nagios:  # a plugin always prints its one status line
            from .render import nagios_text

            typer.echo(f"KVMCHECK UNKNOWN - configuration error: {nagios_text(exc)}")
        typer.echo(f"kvmcheck: {exc}", err=True)
        raise typer.Exit(EXIT_NAGIOS_UNKNOWN if fmt == Format.nagios else EXIT_USAGE)

    usage_exit = EXIT_NAGIOS_UNKNOWN if fmt == Format.nagios else EXIT_USAGE
    try:
        text = render(report, fmt.value, color=_use_color(no_color, output, fmt, template), template=template,
                      quiet=quiet)
    except Exception as exc:  # a user's template with an error: say where, no traceback
        if template is None:
            raise
        typer.echo(f"kvmcheck: template {template}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(usage_exit)
    if output:
        try:
            _write_output(output, text, atomic=fmt == Format.prometheus)
        except OSError as exc:
            typer.echo(f"kvmcheck: cannot write {output}: {exc.strerror}", err=True)
            raise typer.Exit(usage_exit)
    else:
        sys.stdout.write(text)
    if exit_zero:
        raise typer.Exit(EXIT_READY)
    if fmt == Format.nagios:
        raise typer.Exit(report.nagios_code)
    raise typer.Exit(int(report.exit_status))


def _write_output(path: str, text: str, atomic: bool) -> None:
    """The only file kvmcheck ever writes.

    Prometheus' textfile collector reads every *.prom file in its directory at any moment, so
    that format is written to a temporary name without the .prom suffix in the same directory
    and renamed into place: the collector sees the old file or the new one, never half of one.
    """
    if not atomic:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # node_exporter usually runs as its own user
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


@app.command()
def profiles() -> None:
    """List the built-in profiles: what each host kind needs."""
    from .config import list_profiles

    for name, description in list_profiles():
        typer.echo(f"{name:20}  {description}")


class FleetFormat(str, enum.Enum):
    text = "text"
    json = "json"
    csv = "csv"
    html = "html"


@app.command()
def fleet(
    paths: Annotated[List[str], typer.Argument(metavar="REPORT_OR_DIR...", help="JSON reports, or directories of them.")],
    fmt: Annotated[FleetFormat, typer.Option("--format", "-f", help="Fleet report format.")] = FleetFormat.text,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE")] = None,
    max_age: Annotated[float, typer.Option("--max-age", metavar="HOURS",
                                           help="Reports older than this are listed as stale.")] = 24.0,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar on a terminal.")] = False,
) -> None:
    """Aggregate many JSON reports into a fleet view: ready hosts, failures per check and cause, stale reports."""
    from .fleet import fleet_command

    raise typer.Exit(fleet_command(paths, fmt.value, output, max_age, show_progress=not no_progress))


class DiffFormat(str, enum.Enum):
    text = "text"
    json = "json"


@app.command("diff")
def diff_reports(
    old: Annotated[str, typer.Argument(metavar="OLD", help="The earlier report (host or fleet JSON).")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="The later report.")],
    fmt: Annotated[DiffFormat, typer.Option("--format", "-f", help="Output format.")] = DiffFormat.text,
) -> None:
    """What changed between two reports: regressions first, then fixes, new and removed checks.

    Exit 1 when anything regressed, so a cron job or CI step can alert on drift.
    """
    from .drift import diff_command

    raise typer.Exit(diff_command(old, new, fmt.value))


@app.command()
def snapshot(
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE.tar.gz", help="The archive to write.")],
    root: Annotated[str, typer.Option("--root", metavar="DIR", help="Capture the system under DIR.")] = "/",
) -> None:
    """Capture exactly the files kvmcheck reads (an allowlist), to audit this host offline later."""
    from .snapshot import snapshot_command

    raise typer.Exit(snapshot_command(root, output))


@app.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) that every --format json report follows."""
    from . import report_file

    sys.stdout.write(report_file("report.schema.json"))  # from the package, a directory or kvmcheck.pyz


def _nagios_requested(argv: List[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg in ("--format", "-f") and i + 1 < len(argv) and argv[i + 1] == "nagios":
            return True
        if arg in ("--format=nagios", "-fnagios"):
            return True
    return False


TOP_LEVEL_OPTIONS = ("--version", "--help", "-h")


def default_command(argv: List[str]) -> List[str]:
    """`kvmcheck --format json` means `kvmcheck check --format json`: with no command, check's options
    apply (as the bare `kvmcheck` runs check), except the program's own --version and --help."""
    if argv and argv[0].startswith("-") and argv[0] not in TOP_LEVEL_OPTIONS:
        return ["check"] + argv
    return argv


def main() -> None:
    argv = default_command(sys.argv[1:])
    if not _nagios_requested(argv):
        app(args=argv, prog_name="kvmcheck")
        return
    # Nagios reads 2 as CRITICAL and 1 as WARNING: usage errors and crashes must be UNKNOWN (3).
    import click

    try:
        code = app(args=argv, prog_name="kvmcheck", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        sys.stdout.write(f"KVMCHECK UNKNOWN - usage error: {exc.format_message()}\n")
        sys.exit(EXIT_NAGIOS_UNKNOWN)
    except Exception as exc:  # noqa: BLE001 - a plugin must answer, whatever happened
        sys.stdout.write(f"KVMCHECK UNKNOWN - kvmcheck failed: {type(exc).__name__}: {exc}\n")
        sys.exit(EXIT_NAGIOS_UNKNOWN)
    sys.exit(code or 0)
