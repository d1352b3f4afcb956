# SPDX-License-Identifier: GPL-2.0-or-later
"""'kvmcheck fix': the remedies of a report (kvmcheck.tools.remedies) as a reviewed, idempotent script.

Prints, never runs.  Two renderings of the same steps:
- shell: POSIX sh with 'set -eu'; every change is tested first (a drop-in is written only when its content
  differs, a command runs only when its guard says the change is not there yet), so a second run changes
  nothing; no time stamp, so two runs of 'kvmcheck fix' on one report give the same bytes.
- ansible: one play for 'hosts: all' with 'become: true', ansible.builtin modules only (see README).
"""
from __future__ import annotations

import json
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kvmcheck.tools.remedies import IMPACTS, MARKER, HostInfo, Remedy, Step, host_info, one_line

WIDTH = 110  # of comment lines

# A guard for kernel arguments, run as 'sh -c SCRIPT sh +ADD... -REMOVE...' with the current arguments of
# every boot entry on its standard input, one entry per line, blank-padded (" a b c "): exit 0 when every
# entry has each +ADD and none has a -REMOVE.  The values are positional parameters, never code.
ARGS_DONE = ('args=$(cat); [ -n "$args" ] || exit 1; for want; do case $want in '
             '+*) printf "%s\\n" "$args" | grep -qvF " ${want#+} " && exit 1;; '
             '-*) printf "%s\\n" "$args" | grep -qF " ${want#-} " && exit 1;; esac; done; exit 0')
GRUBBY_ARGS = "grubby --info=ALL | sed -n 's/^args=\"\\(.*\\)\"$/ \\1 /p'"
GRUB_CFG = "/boot/grub/grub.cfg"
GRUB_ARGS = f"sed -n 's/^[[:space:]]*linux[[:space:]]\\{{1,\\}}[^[:space:]]*\\(.*\\)$/\\1 /p' {GRUB_CFG}"
KERNELSTUB_DONE = ('c=/etc/kernelstub/configuration; for want; do case $want in '
                   '+*) grep -qF "\\"${want#+}\\"" "$c" || exit 1;; -*) grep -qF "\\"${want#-}\\"" "$c" && exit 1;; '
                   'esac; done; exit 0')
DPKG_DONE = ('for p; do dpkg-query -W -f="\\${Status}" "$p" 2>/dev/null | grep -qx "install ok installed" '
             '|| exit 1; done')
IMPACT_WORDS = {"runtime": "effective now", "service-restart": "a service restarts",
                "relogin": "the users must log in again", "reboot": "effective after a reboot",
                "power-cycle": "effective after a power cycle", "manual": "a person's step"}


def wrap(text: str, prefix: str = "# ") -> List[str]:
    import textwrap

    return [prefix + line for line in textwrap.wrap(one_line(text), WIDTH - len(prefix),
                                                    break_long_words=True, break_on_hyphens=False)] or [prefix.rstrip()]


def q(word: str) -> str:
    return shlex.quote(word)


def argv_text(argv: Sequence[str]) -> str:
    return " ".join(q(a) for a in argv)


def _args_guard(tool: str, add: Sequence[str], remove: Sequence[str]) -> Tuple[str, ...]:
    """The argv whose exit 0 says the next boot already has these kernel arguments."""
    wanted = tuple("+" + a for a in add) + tuple("-" + r for r in remove)
    if tool == "kernelstub":
        return ("sh", "-c", KERNELSTUB_DONE, "sh") + wanted
    source = GRUBBY_ARGS if tool == "grubby" else GRUB_ARGS
    return ("sh", "-c", f"{source} | {{ {ARGS_DONE}; }}", "sh") + wanted


def _grub_sed(remove: Sequence[str]) -> Tuple[str, ...]:
    """sed argv that deletes these words from GRUB_CMDLINE_LINUX(_DEFAULT) in /etc/default/grub."""
    exprs: List[str] = []
    for word in remove:
        exprs += ["-e", "/^GRUB_CMDLINE_LINUX(_DEFAULT)?=/s/([\" ])" + word.replace(".", "\\.") + "([\" ])/\\1\\2/g"]
    return ("sed", "-i", "-E") + tuple(exprs) + ("/etc/default/grub",)


def _kernel_commands(step: Step) -> Tuple[List[Tuple[str, ...]], Optional[Tuple[str, Tuple[str, ...]]]]:
    """(commands, drop-in) of a kernel-args step: drop-in is (path, lines) for GRUB's /etc/default/grub.d."""
    tool, add, remove, check_id = step.args
    if tool == "grubby":  # every installed kernel, and (grubby >= 8.40-63) GRUB_CMDLINE_LINUX in /etc/default/grub
        cmd = ("grubby", "--update-kernel=ALL") + ((f"--args={' '.join(add)}",) if add else ()) + (
            (f"--remove-args={' '.join(remove)}",) if remove else ())
        return [cmd], None
    if tool == "kernelstub":
        cmds = ([("kernelstub", "--add-options", " ".join(add))] if add else []) + (
            [("kernelstub", "--delete-options", " ".join(remove))] if remove else [])
        return cmds, None
    cmds = [_grub_sed(remove)] if remove else []
    drop = None
    if add:  # grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub (Debian, Ubuntu)
        drop = (f"/etc/default/grub.d/zz-kvmcheck-{check_id}.cfg",
                (MARKER.format(check=check_id),
                 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT ' + " ".join(add) + '"'))
    return cmds + [("update-grub",)], drop


# -- shell ----------------------------------------------------------------------------------------------------
PUT_FILE = """\
# put_file PATH MODE LINE...: write PATH whole with these lines, only when its content differs.
put_file() {
    path=$1
    mode=$2
    shift 2
    if [ -f "$path" ] && [ "$(cat "$path")" = "$(printf '%s\\n' "$@")" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    printf '%s\\n' "$@" > "$path"
    chmod "$mode" "$path"
    echo "kvmcheck fix: wrote $path"
}
"""


def _put_file(path: str, mode: str, lines: Sequence[str], indent: str = "") -> List[str]:
    out = [f"{indent}put_file {q(path)} {q(mode)} \\"]
    out += [f"{indent}    {q(line)}" + (" \\" if i < len(lines) - 1 else "") for i, line in enumerate(lines)]
    return out


def _guarded(guard: Optional[Sequence[str]], body: List[str]) -> List[str]:
    if guard is None:
        return body
    quiet = "" if guard[0] == "test" else " >/dev/null 2>&1"  # test prints nothing
    return [f"if ! {argv_text(guard)}{quiet}; then"] + ["    " + line for line in body] + ["fi"]


def shell_step(step: Step) -> List[str]:
    kind, args = step.kind, step.args
    if kind == "file":
        path, lines, mode = args
        return _put_file(path, mode, lines)
    if kind == "comment-out":
        path, regex, check_id = args
        sed = f"s/{regex}/# disabled by kvmcheck fix ({check_id}): &/"
        return [f"if grep -Eq {q(regex)} {q(path)}; then", f"    sed -i -E {q(sed)} {q(path)}",
                f"    echo {q('kvmcheck fix: edited ' + path)}", "fi"]
    if kind == "run":
        commands, guard, soft = args
        if soft:
            chain = " && ".join(argv_text(c) for c in commands)
            failed = f"kvmcheck fix: {' && '.join(' '.join(c) for c in commands)} failed: see dmesg; a reboot applies it"
            body = [f"if ! {{ {chain}; }}; then", f"    echo {q(failed)} >&2", "fi"]
        else:
            body = [argv_text(c) for c in commands]
        return _guarded(guard, body)
    if kind == "group":
        user, group, restart = args
        then = "".join(f"; systemctl try-restart {q(unit)}" for unit in restart)
        return [f"case \" $(id -nG {q(user)}) \" in", f"    *{q(' ' + group + ' ')}*) ;;",
                f"    *) usermod -aG {q(group)} {q(user)}{then} ;;", "esac"]
    if kind == "service":
        unit = q(args[0])
        return [f"if ! {{ systemctl is-enabled --quiet {unit} && systemctl is-active --quiet {unit}; }}; then",
                f"    systemctl enable --now {unit}", "fi"]
    if kind == "packages":
        manager, names = args
        if manager == "apt-get":
            return _guarded(("sh", "-c", DPKG_DONE, "sh") + names,
                            ["apt-get update", "apt-get install -y " + argv_text(names)])
        install = ("dnf", "-y", "install") if manager == "dnf" else ("zypper", "--non-interactive", "install")
        return _guarded(("rpm", "-q") + names, [argv_text(install + names)])
    if kind == "kernel-args":
        commands, drop = _kernel_commands(step)
        body = (_put_file(drop[0], "0644", drop[1]) if drop else []) + [argv_text(c) for c in commands]
        return _guarded(_args_guard(args[0], args[1], args[2]), body)
    return wrap(f"MANUAL: {step.what}")


def _tools(remedies: Sequence[Remedy]) -> List[str]:
    """The commands the script runs, for the preflight: missing one, it stops before changing anything."""
    found: Dict[str, None] = {}
    for r in remedies:
        for s in r.steps:
            if s.kind == "run":
                for c in s.args[0]:
                    found[c[0]] = None
                if s.args[1] is not None:
                    found[s.args[1][0]] = None
            elif s.kind == "group":
                found.update(dict.fromkeys(("id", "usermod") + (("systemctl",) if s.args[2] else ())))
            elif s.kind == "service":
                found["systemctl"] = None
            elif s.kind == "packages":
                found.update(dict.fromkeys(("dpkg-query", "apt-get") if s.args[0] == "apt-get" else ("rpm", s.args[0])))
            elif s.kind == "kernel-args":
                commands, _ = _kernel_commands(s)
                found.update(dict.fromkeys(c[0] for c in commands))
                if s.args[0] == "grubby":
                    found["grubby"] = None
            elif s.kind == "comment-out":
                found.update(dict.fromkeys(("grep", "sed")))
    for builtin in ("sh", "test"):
        found.pop(builtin, None)
    return list(found)


def _header(host: HostInfo, version: str, remedies: Sequence[Remedy], prefix: str = "# ") -> List[str]:
    lines = wrap(f"kvmcheck fix: the changes that fix the findings of kvmcheck {version} on {host.label}.", prefix)
    lines += wrap("Review it, then run it as root. It never undoes anything; it is idempotent: every change is "
                  "tested first, and a second run changes nothing.", prefix)
    lines += wrap("Impact of a step: " + "; ".join(f"{k}: {v}" for k, v in IMPACT_WORDS.items()) + ".", prefix)
    if not any(r.steps for r in remedies):
        lines += wrap("Nothing to fix: no finding has a step.", prefix)
    return lines


def _still_to_do(remedies: Sequence[Remedy]) -> List[Tuple[str, str]]:
    """(impact, check ids) for everything that is not effective when the script ends, in IMPACTS order."""
    by: Dict[str, List[str]] = {}
    for r in remedies:
        for s in r.steps:
            if s.impact != "runtime" and r.check_id not in by.setdefault(s.impact, []):
                by[s.impact].append(r.check_id)
    return [(k, ", ".join(by[k])) for k in IMPACTS if by.get(k)]


def render_shell(remedies: Sequence[Remedy], host: HostInfo, version: str) -> str:
    out = ["#!/bin/sh",
           "# shellcheck disable=SC2016 # single-quoted $ on purpose: sh -c scripts take values as \"$@\",",
           "# and GRUB's drop-in expands $GRUB_CMDLINE_LINUX_DEFAULT when GRUB reads it."]
    out += _header(host, version, remedies)
    out += ["set -eu", ""]
    if any(s.kind == "file" or (s.kind == "kernel-args" and s.args[0] == "grub-dropin" and s.args[1])
           for r in remedies for s in r.steps):
        out += PUT_FILE.splitlines() + [""]
    tools = _tools(remedies)
    if tools:
        out += ["# Preflight: every command this script runs is here, or it stops before changing anything.",
                ] + [f"command -v {q(t)} >/dev/null 2>&1 || {{ echo {q(f'kvmcheck fix: {t} not found')} >&2; exit 1; }}"
                     for t in tools] + [""]
    for r in remedies:
        out += wrap(f"== {r.check_id} ({r.status}): {r.summary}")
        if r.note:
            out += wrap(r.note)
        for step in r.steps:
            if step.kind != "manual":
                out += wrap(f"-- {step.what} [impact: {step.impact}]")
            else:
                out += wrap(f"-- MANUAL [impact: {step.impact}]: {step.what}")
                continue
            out += shell_step(step)
        out.append("")
    todo = _still_to_do(remedies)
    out += ["# == Still to do when this script has run"]
    out += ["echo 'kvmcheck fix: done.'"]
    for impact, ids in todo:
        out += [f"echo {q(f'kvmcheck fix: still to do ({impact}): {ids}')}"]
    return "\n".join(out) + "\n"


# -- ansible --------------------------------------------------------------------------------------------------
def _yaml_scalar(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar


def _folded(text: str, indent: int, width: int = 100) -> str:
    """A long scalar as a double-quoted YAML string over several lines (yamllint's 160 columns): each line ends
    in an escaped line break, which YAML drops together with the next line's indentation, so no line may
    start with a blank of the value; an escape sequence is never cut."""
    import re

    tokens = re.findall(r'\\u[0-9a-fA-F]{4}|\\.|[^\\]', json.dumps(text)[1:-1])
    lines, line = [], ""
    for tok in tokens:
        if len(line) >= width and tok not in (" ", "\t"):
            lines.append(line)
            line = ""
        line += tok
    lines.append(line)
    pad = " " * (indent + 2)
    return '"' + ("\\\n" + pad).join(lines) + '"'


def _yaml(value: Any, indent: int) -> List[str]:
    """Block YAML of dicts, lists and scalars; a key "#" holds comment lines."""
    pad = " " * indent
    out: List[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "#":
                out += [pad + line for line in item]
            elif isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:")
                out += _yaml(item, indent + 2)
            else:
                scalar = _yaml_scalar(item) if item != [] else "[]"
                out.append(f"{pad}{key}: {_folded(item, indent) if len(scalar) > 120 else scalar}")
        return out
    for item in value:
        if isinstance(item, dict):  # its comment lines first, then "- " on its first key
            lines = _yaml(item, indent + 2)
            first = next(i for i, line in enumerate(lines) if not line.lstrip().startswith("#"))
            out += [pad + line.lstrip() for line in lines[:first]]
            out.append(pad + "- " + lines[first][indent + 2:])
            out += lines[first + 1:]
        else:
            scalar = _yaml_scalar(item)
            out.append(f"{pad}- {_folded(item, indent) if len(scalar) > 120 else scalar}")
    return out


class _Tasks:
    def __init__(self) -> None:
        self.tasks: List[Dict[str, Any]] = []
        self.handlers: Dict[str, Dict[str, Any]] = {}
        self.guards = 0

    def add(self, task: Dict[str, Any], comments: Sequence[str] = ()) -> None:
        if comments:
            task = dict({"#": list(comments)}, **task)
        self.tasks.append(task)

    def guard(self, name: str, argv: Sequence[str], comments: List[str]) -> str:
        """A task that only asks (exit 0: the change is there already); the condition of the steps after it."""
        self.guards += 1
        var = f"kvmcheck_guard_{self.guards}"
        self.add({"name": f"{name} (is it done already?)", "ansible.builtin.command": {"argv": list(argv)},
                  "register": var, "changed_when": False, "failed_when": False, "check_mode": False}, comments)
        comments.clear()
        return f"{var}.rc != 0"


GRUB_HANDLER = "Regenerate the GRUB configuration"


def _ansible_step(t: _Tasks, r: Remedy, step: Step, comments: List[str]) -> None:
    name = f"Fix {r.check_id}: {step.what}"
    kind, args = step.kind, step.args
    if kind == "file":
        path, lines, mode = args
        t.add({"name": name, "ansible.builtin.copy": {"dest": path, "content": "\n".join(lines) + "\n",
                                                     "owner": "root", "group": "root", "mode": mode}}, comments)
    elif kind == "comment-out":
        path, regex, check_id = args
        t.add({"name": name, "ansible.builtin.replace": {
            "path": path, "regexp": regex.replace("[[:space:]]", "[ \\t]"),
            "replace": f"# disabled by kvmcheck fix ({check_id}): \\g<0>"}}, comments)
    elif kind == "run":
        commands, guard, soft = args
        when = t.guard(name, guard, comments) if guard is not None else None
        if soft and len(commands) > 1:  # one task: the chain stops at its first failure, as in the shell
            words = [w for c in commands for w in c]
            script, n = [], 0
            for c in commands:
                script.append(" ".join(f'"${{{n + i + 1}}}"' for i in range(len(c))))
                n += len(c)
            commands = [("sh", "-c", " && ".join(script), "sh") + tuple(words)]
        for i, command in enumerate(commands):
            task: Dict[str, Any] = {"name": name + (f" ({i + 1}/{len(commands)})" if len(commands) > 1 else "")}
            if command[0] == "systemctl" and command[1] == "try-restart":
                task["ansible.builtin.systemd_service"] = {"name": command[2], "state": "restarted"}
            else:
                task["ansible.builtin.command"] = {"argv": list(command)}
                task["changed_when"] = True
            if when:
                task["when"] = when
            if soft:
                task["failed_when"] = False
            t.add(task, comments if i == 0 else ())
    elif kind == "group":
        user, group, restart = args
        task = {"name": name, "ansible.builtin.user": {"name": user, "groups": [group], "append": True}}
        for unit in restart:
            handler = f"Restart {unit}"
            t.handlers[handler] = {"name": handler, "ansible.builtin.systemd_service": {"name": unit,
                                                                                         "state": "restarted"}}
            task["notify"] = handler
        t.add(task, comments)
    elif kind == "service":
        t.add({"name": name, "ansible.builtin.systemd_service": {"name": args[0], "enabled": True,
                                                                 "state": "started"}}, comments)
    elif kind == "packages":
        manager, names = args
        module = {"apt-get": "ansible.builtin.apt", "dnf": "ansible.builtin.dnf"}.get(manager, "ansible.builtin.package")
        spec: Dict[str, Any] = {"name": list(names), "state": "present"}
        if manager == "apt-get":
            spec["update_cache"] = True
        t.add({"name": name, module: spec}, comments)
    elif kind == "kernel-args":
        tool, add, remove, check_id = args
        when = t.guard(name, _args_guard(tool, add, remove), comments)
        commands, drop = _kernel_commands(step)
        if tool == "grub-dropin":
            t.handlers[GRUB_HANDLER] = {"name": GRUB_HANDLER, "ansible.builtin.command": {"argv": ["update-grub"]},
                                        "changed_when": True}
            if drop:
                t.add({"name": name, "ansible.builtin.copy": {
                    "dest": drop[0], "content": "\n".join(drop[1]) + "\n", "owner": "root", "group": "root",
                    "mode": "0644"}, "when": when, "notify": GRUB_HANDLER}, comments)
                comments = []
            for word in remove:
                t.add({"name": f"{name} (remove {word})", "ansible.builtin.replace": {
                    "path": "/etc/default/grub", "regexp": "^(GRUB_CMDLINE_LINUX(?:_DEFAULT)?=.*[\" ])"
                    + word.replace(".", "\\.") + "([\" ])", "replace": "\\1\\2"}, "when": when,
                    "notify": GRUB_HANDLER}, comments)
                comments = []
        else:
            for command in commands:
                t.add({"name": name, "ansible.builtin.command": {"argv": list(command)}, "when": when,
                       "changed_when": True}, comments)
                comments = []


def render_ansible(remedies: Sequence[Remedy], host: HostInfo, version: str) -> str:
    t = _Tasks()
    manual: List[str] = []
    for r in remedies:
        head = wrap(f"== {r.check_id} ({r.status}): {r.summary}") + (wrap(r.note) if r.note else [])
        for step in r.steps:
            comments = head + wrap(f"-- {step.what} [impact: {step.impact}]")
            if step.kind == "manual":
                manual.append(f"{r.check_id} ({step.impact}): {step.what}")
                continue
            _ansible_step(t, r, step, comments)
            head = []
    todo = [f"{impact}: {ids}" for impact, ids in _still_to_do(remedies)]
    if todo or not t.tasks:
        t.add({"name": "Still to do when this play has run", "ansible.builtin.debug": {
            "msg": todo or ["nothing: no finding has a step"]}}, [line for m in manual for line in wrap("MANUAL " + m)])
    play: Dict[str, Any] = {"name": f"Fix the kvmcheck findings of {host.label}"[:200], "hosts": "all",
                            "become": True, "gather_facts": False, "tasks": t.tasks}
    if t.handlers:
        play["handlers"] = list(t.handlers.values())
    lines = ["---"] + _header(host, version, remedies)
    lines += wrap("ansible.builtin modules only. A reboot is left to you (a handler would be:", "# ")
    lines += ["#   - name: Reboot", "#     ansible.builtin.reboot:", "#   listen: reboot needed", "# )."]
    lines += _yaml([play], 0)
    return "\n".join(lines) + "\n"


# -- explain --------------------------------------------------------------------------------------------------
def explain(remedy: Remedy, result: Dict[str, Any], host: HostInfo) -> str:
    out = [f"{remedy.check_id} ({remedy.status}): {remedy.summary}", ""]
    detail = one_line(result.get("detail") or "")
    if detail:
        out += [line[2:] for line in wrap("Why: " + detail)] + [""]
    if remedy.note:
        out += [remedy.note, ""]
    if not remedy.steps:
        out.append("No step: nothing to change here.")
    for step in remedy.steps:
        out.append(f"- {step.what} [impact: {step.impact}]")
        if step.kind != "manual":
            out += ["    " + line for line in shell_step(step)]
    return "\n".join(out) + "\n"


# -- the command ----------------------------------------------------------------------------------------------
class FixError(Exception):
    """A usage error: the message says what to give instead."""


def load_report(path: str) -> Dict[str, Any]:
    from kvmcheck.core.model import READ_REPORT_VERSIONS

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise FixError(f"cannot read the report {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") not in READ_REPORT_VERSIONS or not isinstance(
            data.get("checks"), list):
        raise FixError(f"{path} is not a host report of 'kvmcheck check -f json' (schema_version "
                       f"{', '.join(map(str, READ_REPORT_VERSIONS))})")
    return data


def select(report: Dict[str, Any], only: Optional[Sequence[str]], skip: Optional[Sequence[str]]) -> List[str]:
    from fnmatch import fnmatchcase

    ids = [str(r.get("id")) for r in report.get("checks") or [] if isinstance(r, dict)]
    for pattern in list(only or []) + list(skip or []):
        if not any(fnmatchcase(i, pattern) for i in ids):
            raise FixError(f"{pattern!r} matches no check of the report")
    chosen = [i for i in ids if not only or any(fnmatchcase(i, p) for p in only)]
    return [i for i in chosen if not any(fnmatchcase(i, p) for p in skip or [])]


def fix_text(report: Dict[str, Any], fmt: str = "shell", only: Optional[Sequence[str]] = None,
             skip: Optional[Sequence[str]] = None, explain_id: Optional[str] = None) -> str:
    """The script (or the --explain text) for a report dict; raises FixError for a usage error."""
    from kvmcheck.tools.remedies import remedies as build

    selected = select(report, only, skip)
    host = host_info(report)
    version = one_line(str((report.get("tool") or {}).get("version") or "?"), 40)
    if explain_id is not None:
        result = next((r for r in report.get("checks") or [] if isinstance(r, dict) and r.get("id") == explain_id),
                      None)
        if result is None:
            raise FixError(f"no check {explain_id!r} in the report")
        found = build(report, [explain_id], [explain_id])
        if not found:
            return (f"{explain_id} ({result.get('status')}): {one_line(result.get('summary') or '')}\n\n"
                    "Not a finding and nothing pending: nothing to fix.\n")
        return explain(found[0], result, host)
    remedies = build(report, selected, [p for p in only or [] if p in selected])
    return render_shell(remedies, host, version) if fmt == "shell" else render_ansible(remedies, host, version)
