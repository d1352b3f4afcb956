# SPDX-License-Identifier: GPL-2.0-or-later
"""The command line (typer only): options -> runner -> renderer -> exit status.

Exit status (kvmcheck.core.status.ExitStatus): 0 ready, 1 not ready, 2 usage or configuration error,
3 unknown (no evidence for a verdict; with -f nagios also every usage error and crash).
"""
# No "from __future__ import annotations" here: typer on Python 3.9 reads Annotated only from real objects.

import enum
import os
import sys
from typing import Dict, FrozenSet, List, NoReturn, Optional, Tuple

import typer

try:
    from typing import Annotated
except ImportError:  # pragma: no cover - Python < 3.9 is not supported, but be clear
    from typing_extensions import Annotated  # type: ignore

from kvmcheck import __version__
from kvmcheck.core.status import ExitStatus
from kvmcheck.core.record import Record

EXIT_READY, EXIT_NOT_READY, EXIT_USAGE = ExitStatus.READY, ExitStatus.NOT_READY, ExitStatus.USAGE
# click's own Abort (end of input at a prompt) keeps click's status 1, as its standalone mode would
EXIT_ABORTED = ExitStatus.NOT_READY
EXIT_NAGIOS_UNKNOWN = ExitStatus.UNKNOWN  # -f nagios: usage errors and crashes are UNKNOWN, since 2 means CRITICAL

app = typer.Typer(
    # --install-completion / --show-completion on the top level only (not in 'check --help'). Free at start-up:
    # typer imports its completion module anyway; the shell is detected only when one of them is given.
    add_completion=True,
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
        # Invoke check's click command, not the function: click then fills in every option's default and gives
        # check its own context (typer passes that as check's ctx). Calling check() bare lacked the ctx.
        ctx.invoke(ctx.command.get_command(ctx, "check"))


def _columns(output: Optional[str]) -> int:
    """The text report's width: the terminal's on a terminal, else COLUMNS, else 80."""
    if not output and sys.stdout.isatty():
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except OSError:
            columns = 0
        if columns > 0:  # a pseudo-terminal nobody sized (script, some CI runners) says 0
            return columns
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 80


class _Progress:
    """On a terminal, after half a second: which check is running, on stderr, on one line that is cleared
    at the end.  Nothing when stderr is not a terminal (Kickstart logs, pipes, Ansible)."""

    DELAY_S = 0.5

    def __init__(self) -> None:
        import threading
        import time

        self._time = time.monotonic
        self._start, self._count, self._current, self._shown = time.monotonic(), 0, "", False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="kvmcheck-progress", daemon=True)
        self._thread.start()

    def __call__(self, check) -> None:  # type: ignore[no-untyped-def]
        self._count += 1
        self._current = check.id

    def _spin(self) -> None:
        frames = "|/-\\"
        i = 0
        if self._stop.wait(self.DELAY_S):
            return
        while not self._stop.wait(0.1):
            line = f"{frames[i % 4]} kvmcheck: check {self._count}: {self._current}"
            sys.stderr.write("\r" + line[: _columns(None) - 1] + "\x1b[K")
            sys.stderr.flush()
            self._shown, i = True, i + 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Text format: show each check's evidence "
                                          "too.")] = False,
) -> None:
    """Run the checks and report whether this host is ready for KVM.

    Exit status: 0 ready, 1 not ready, 2 usage or configuration error, 3 unknown (nothing failed, but an
    essential check could not decide, or the root holds no system). -f nagios: 0 OK, 1 WARNING, 2 CRITICAL,
    3 UNKNOWN.
    """
    options = {name: value for name, value in locals().items() if name in CheckOptions._fields}  # all of them
    from click.core import ParameterSource  # where an option's value came from: typed, or its default

    typed = frozenset(name for name in options if ctx.get_parameter_source(name) in (
        ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT))
    _check(CheckOptions(**options, typed=typed))


class CheckOptions(Record):
    """check's options, as given (typed: the names of those typed on the command line, not defaulted)."""

    root: str
    fmt: Format
    output: Optional[str]
    template: Optional[str]
    config: Optional[str]
    profile: Optional[str]
    exit_zero: bool
    only: Optional[List[str]]
    skip: Optional[List[str]]
    strict: bool
    timeout: float
    min_kernel: str
    online: bool
    no_color: bool
    debug: bool
    quiet: bool
    verbose: bool
    typed: FrozenSet[str] = frozenset()

    def command_line_settings(self) -> Dict[str, object]:
        """The Settings fields given on the command line (only those: a default is not a choice)."""
        given = {"check_timeout": ("timeout", self.timeout), "min_kernel": ("min_kernel", self.min_kernel),
                 "online": ("online", self.online)}
        return {field: value for field, (option, value) in given.items() if option in self.typed}


def _check(opts: CheckOptions, root_label: Optional[str] = None) -> None:
    """check's work on its options: a snapshot archive is unpacked and checked as its directory."""
    from kvmcheck.facts.context import Settings
    from kvmcheck.parsers import ParseError
    from kvmcheck.parsers.kernel_version import parse_min_version
    from kvmcheck.core.render import render
    from kvmcheck.core.runner import SelectionError, run

    root, fmt, output, template, quiet, verbose = opts.root, opts.fmt, opts.output, opts.template, opts.quiet, \
        opts.verbose
    if output is not None:
        _check_output(output)
    if os.path.isfile(root):
        # A snapshot archive ('kvmcheck snapshot') or a tree packed with 'tar -C DIR .', recognised by its
        # content: audit it offline, unpacked safely into a private directory.  The report names the
        # archive (its real path, as a directory root is named), never the private directory.
        from kvmcheck.tools.snapshot import ArchiveError, open_archive

        try:
            with open_archive(root) as unpacked:
                _check(opts._replace(root=unpacked), os.path.realpath(root))
        except ArchiveError as exc:  # unsafe, oversized or corrupt: refuse, never half-audit
            raise typer.BadParameter(str(exc), param_hint="--root")
        return
    if not os.path.isdir(root):
        raise typer.BadParameter(f"{root!r} is not a directory or a snapshot archive", param_hint="--root")
    if template is not None and "fmt" in opts.typed:
        raise typer.BadParameter("--template renders your own template, in place of --format: give one of them",
                                 param_hint="--format/--template")
    if (quiet or verbose) and (fmt != Format.text or template is not None):
        raise typer.BadParameter("-q and -v shape the text report; they do not apply to --format "
                                 f"{fmt.value} or --template", param_hint="--quiet/--verbose")
    if quiet and verbose:
        raise typer.BadParameter("-q prints the verdict block only; -v adds evidence: choose one",
                                 param_hint="--quiet/--verbose")
    if template is not None and not os.path.isfile(template):
        raise typer.BadParameter(f"{template!r} is not a file", param_hint="--template")
    try:
        parse_min_version(opts.min_kernel)
    except ParseError as exc:
        raise typer.BadParameter(str(exc), param_hint="--min-kernel")
    from kvmcheck.core.config import ConfigError

    progress = _Progress() if sys.stderr.isatty() else None
    try:
        report = run(root, opts.only, opts.skip, strict=opts.strict, debug=opts.debug, config=opts.config,
                     profile=opts.profile, settings=Settings(**opts.command_line_settings()),
                     root_label=root_label, progress=progress)
    except SelectionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only/--skip")
    except ConfigError as exc:  # the file, the line and what was expected; never a traceback
        _refuse(fmt, "configuration error", str(exc))
    finally:
        if progress is not None:
            progress.close()

    from kvmcheck.core.render import TemplateUsageError

    try:
        text = render(report, fmt.value, color=_use_color(opts.no_color, output, fmt, template), template=template,
                      quiet=quiet, columns=_columns(output), verbose=verbose)
    except TemplateUsageError as exc:  # a user's template with an error or a refused construct: file and line
        _refuse(fmt, "template error", f"template {exc}")
    except Exception as exc:  # reading a user's template failed (I/O, encoding): say which, no traceback
        if template is None:
            raise
        _refuse(fmt, "template error", f"template {template}: {type(exc).__name__}: {exc}")
    if output:
        try:
            _write_output(output, text)
        except OSError as exc:
            _refuse(fmt, "output error", f"cannot write {output}: {exc.strerror}")
    else:
        sys.stdout.write(text)
    if opts.exit_zero:
        raise typer.Exit(EXIT_READY)
    if fmt == Format.nagios:
        raise typer.Exit(report.nagios_code)
    raise typer.Exit(int(report.exit_status))


def _refuse(fmt: Format, kind: str, message: str) -> NoReturn:
    """A usage or configuration error found by check itself: the message on stderr and exit 2, or with
    -f nagios only the plugin's one status line on stdout (UNKNOWN, exit 3): Nagios reads only stdout, and
    Icinga 2 appends stderr to the plugin output, where a second copy would be a second line.  The message
    may quote a file or a path: it is sanitized for the terminal either way."""
    from kvmcheck.core.terminal import one_line, terminal_text

    if fmt == Format.nagios:
        from kvmcheck.core.render import nagios_text

        typer.echo(f"KVMCHECK UNKNOWN - {kind}: {nagios_text(one_line(message))}")
        raise typer.Exit(EXIT_NAGIOS_UNKNOWN)
    typer.echo(f"kvmcheck: {terminal_text(message)}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _check_output(path: str, hint: str = "--output") -> None:
    """-o must name a regular file or a new file in an existing directory (not /proc, a device, a FIFO, a link):
    a usage error before any work is done."""
    from kvmcheck.core.output import OutputError, check_target

    try:
        check_target(path)
    except OutputError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint)


def _write_output(path: str, text: str) -> None:
    """The report file: every format is written atomically and link-safely (kvmcheck.core.output): a reader, such
    as node_exporter's textfile collector, sees the old file or the new one, never half of one."""
    from kvmcheck.core.output import write_text

    write_text(path, text)


class FixFormat(str, enum.Enum):
    shell = "shell"
    ansible = "ansible"


@app.command()
def fix(
    root: Annotated[str, typer.Option("--root", metavar="DIR", help="Fix the system under DIR.")] = "/",
    fmt: Annotated[FixFormat, typer.Option("--format", "-f", help="A POSIX sh script or an Ansible play.")] = FixFormat.shell,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE",
                                                  help="Write the script to FILE instead of stdout.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", metavar="FILE", help="As for check.")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", metavar="NAME", help="As for check.")] = None,
    only: Annotated[Optional[List[str]], typer.Option("--only", metavar="PATTERN", help="Fix only the findings of "
                    "checks whose id matches (glob, repeatable); an exact id also takes an optional change, such as "
                    "kvm.nested's.")] = None,
    skip: Annotated[Optional[List[str]], typer.Option("--skip", metavar="PATTERN",
                                                      help="Leave the findings of these checks alone.")] = None,
    explain_id: Annotated[Optional[str], typer.Option("--explain", metavar="ID",
                                                      help="Why, the finding, the commands and their impact.")] = None,
    from_report: Annotated[Optional[str], typer.Option("--from-report", metavar="FILE", help="Fix from a stored "
                           "'kvmcheck check -f json' report instead of checking now.")] = None,
) -> None:
    """Print, never run, the changes that fix the findings: a reviewed, idempotent script (exit 0, even when
    there is nothing to fix; 2 on a usage error)."""
    from kvmcheck.core.config import ConfigError
    from kvmcheck.core.runner import run
    from kvmcheck.tools.fix import FixError, fix_text, load_report

    if output is not None:
        _check_output(output)
    try:
        if from_report is not None:
            if root != "/" or config or profile:
                raise FixError("--from-report fixes a stored report: --root, --config and --profile do not apply")
            report = load_report(from_report)
        else:
            if not os.path.isdir(root):
                raise typer.BadParameter(f"{root!r} is not a directory", param_hint="--root")
            report = run(root, config=config, profile=profile).to_dict()
        text = fix_text(report, fmt.value, only, skip, explain_id)
    except (FixError, ConfigError) as exc:
        _refuse(Format.text, "usage error", str(exc))
    if output and explain_id is None:
        try:
            _write_output(output, text)
        except OSError as exc:
            _refuse(Format.text, "output error", f"cannot write {output}: {exc.strerror}")
    else:
        sys.stdout.write(text)
    raise typer.Exit(EXIT_READY)


@app.command("list")
def list_checks(
    fmt: Annotated[ListFormat, typer.Option("--format", "-f", help="Listing format.")] = ListFormat.text,
) -> None:
    """List the checks: id, title and what each reads (markdown: the README's table)."""
    import json

    from kvmcheck.core.registry import load_checks

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
    from kvmcheck.core.registry import load_checks

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
    from kvmcheck.core.config import list_profiles

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
    migration: Annotated[bool, typer.Option(
        "--migration", help="Add the live-migration pools: hosts of one CPU vendor, each pool's baseline CPU model, "
                            "common machine types and shared storage, what each host costs its pool.")] = False,
    explain: Annotated[Optional[Tuple[str, str]], typer.Option(
        "--explain", metavar="HOST_A HOST_B", help="Instead of the fleet view: can a guest move from HOST_A to "
        "HOST_B (host-model and the pool's baseline model), and if not, why (text or json; implies --migration; "
        "exit 0 yes in both modes, 1 not in one).")] = None,
) -> None:
    """Aggregate many JSON reports into a fleet view: ready hosts, failures per check and cause, stale reports."""
    from kvmcheck.tools.fleet import fleet_command

    if output is not None:
        _check_output(output)
    raise typer.Exit(fleet_command(paths, fmt.value, output, max_age, show_progress=not no_progress,
                                   migration=migration, explain=explain))


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
    from kvmcheck.tools.drift import diff_command

    raise typer.Exit(diff_command(old, new, fmt.value))


@app.command()
def snapshot(
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE.tar.gz", help="The archive to write.")],
    root: Annotated[str, typer.Option("--root", metavar="DIR", help="Capture the system under DIR.")] = "/",
) -> None:
    """Capture exactly the files kvmcheck reads (an allowlist), to audit this host offline later."""
    from kvmcheck.tools.snapshot import snapshot_command

    _check_output(output)
    raise typer.Exit(snapshot_command(root, output))


@app.command()
def schema(
    fleet_schema: Annotated[bool, typer.Option("--fleet", help="The schema of 'kvmcheck fleet --format json'.")] = False,
    diff_schema: Annotated[bool, typer.Option("--diff", help="The schema of 'kvmcheck diff --format json'.")] = False,
) -> None:
    """Print a JSON Schema (draft 2020-12): of every --format json host report, or with --fleet / --diff of
    the fleet and diff JSON outputs."""
    from kvmcheck import report_file

    if fleet_schema and diff_schema:
        sys.stderr.write("kvmcheck schema: --fleet and --diff are exclusive: one schema at a time\n")
        raise typer.Exit(EXIT_USAGE)
    name = "fleet.schema.json" if fleet_schema else "diff.schema.json" if diff_schema else "report.schema.json"
    sys.stdout.write(report_file(name))  # from the package, a directory or kvmcheck.pyz


def _nagios_requested(argv: List[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg in ("--format", "-f") and i + 1 < len(argv) and argv[i + 1] == "nagios":
            return True
        if arg in ("--format=nagios", "-fnagios"):
            return True
    return False


TOP_LEVEL_OPTIONS = ("--version", "--help", "-h", "--install-completion", "--show-completion")  # not check's


def default_command(argv: List[str]) -> List[str]:
    """`kvmcheck --format json` means `kvmcheck check --format json`: with no command, check's options
    apply (as the bare `kvmcheck` runs check), except the program's own --version and --help."""
    if argv and argv[0].startswith("-") and argv[0] not in TOP_LEVEL_OPTIONS:
        return ["check"] + argv
    return argv


def main() -> None:
    """The command line, with SIGTERM/SIGHUP/SIGINT handled: clean-up, exit 128+N, no traceback."""
    from kvmcheck.core.signals import guarded

    guarded(_run)


def _run() -> None:
    # click's standalone mode is replaced by the same handling, so that every message it prints passes the
    # terminal sanitizer first: a usage error can quote a path, a pattern or an archive member.
    # Nagios reads 2 as CRITICAL and 1 as WARNING: usage errors and crashes must be UNKNOWN (3), on one line.
    import click

    from kvmcheck.core.signals import Terminated, signal_name
    from kvmcheck.core.terminal import one_line

    argv = default_command(sys.argv[1:])
    nagios = _nagios_requested(argv)
    try:
        code = app(args=argv, prog_name="kvmcheck", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        if nagios:
            _nagios_unknown("usage error", exc.format_message())
        exc.message = one_line(exc.message)
        exc.show()
        sys.exit(exc.exit_code)
    except Terminated as exc:  # cleaned up while unwinding; a plugin still answers with one line, and 0-3
        if nagios:
            _nagios_unknown("stopped", f"kvmcheck was stopped by {signal_name(exc.signum)} before its verdict")
        raise
    except click.exceptions.Abort:  # click's own end of input (EOF at a prompt), as standalone mode says it
        if nagios:
            _nagios_unknown("aborted", "kvmcheck was aborted before its verdict")
        sys.stderr.write("Aborted!\n")
        sys.exit(EXIT_ABORTED)
    except BaseException as exc:  # noqa: BLE001 - a plugin must answer, whatever happened
        if not nagios:
            if isinstance(exc, click.exceptions.ClickException):
                exc.message = one_line(exc.message)
                exc.show()
                sys.exit(exc.exit_code)
            raise
        # Without standalone mode click returns typer.Exit's code, so anything escaping is a crash: an exception,
        # or a SystemExit from a third-party check module that calls sys.exit() (1 would read as WARNING).
        if "--debug" in argv:
            import traceback

            traceback.print_exc()
        _nagios_unknown("kvmcheck crashed", f"{type(exc).__name__}: {exc}"
                        + ("" if "--debug" in argv else " (run with --debug for the traceback)"))
    if nagios and code not in (None, 0, 1, 2, 3):  # no plugin state: typer's 130 after Ctrl-C, a stray exit
        _nagios_unknown("interrupted", f"kvmcheck stopped before its verdict (exit status {code})")
    sys.exit(code or 0)


def _nagios_unknown(kind: str, message: str) -> NoReturn:
    """The plugin's one status line (Monitoring Plugins guidelines): stdout, one line, no '|', exit 3."""
    from kvmcheck.core.render import nagios_text
    from kvmcheck.core.terminal import one_line

    sys.stdout.write(f"KVMCHECK UNKNOWN - {kind}: {nagios_text(one_line(message))}\n")
    sys.stdout.flush()
    sys.exit(EXIT_NAGIOS_UNKNOWN)
