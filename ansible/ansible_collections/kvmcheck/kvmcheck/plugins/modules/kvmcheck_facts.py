#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kvmcheck developers
# GNU General Public License v2.0 or later, which includes v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-2.0-or-later
"""Ansible module kvmcheck.kvmcheck.kvmcheck_facts: run kvmcheck on the target, return its report as facts."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kvmcheck_facts
short_description: Check whether a host is ready to run KVM guests, and return the kvmcheck report as facts
version_added: "0.1.0"
description:
  - Runs L(kvmcheck,https://pypi.org/project/kvmcheck/) on the target through its Python API
    (C(import kvmcheck) in the module's interpreter) and returns the JSON report (schema_version 2)
    under C(ansible_facts.kvmcheck).
  - Only reads the host (or the directory given as O(root)); it never changes anything, so it always
    returns C(changed=false) and runs in check mode too.
  - kvmcheck comes from O(pyz), a C(kvmcheck.pyz) file copied to the target (the collection's
    C(kvmcheck.kvmcheck.audit) playbook does that), or else must be importable by the Python interpreter
    Ansible uses on the target (C(ansible_python_interpreter)). If it is not, the task fails and says what to do.
  - By default the task does not fail when the host is not ready, so that every host of an audit reports;
    set O(fail_on_not_ready=true) to fail it. A host whose verdict is V(unknown) (nothing failed, but an
    essential check could not decide, or O(root) holds no installed system) is not ready either, and the
    task fails then too, naming what lacked evidence.
author:
  - kvmcheck developers (!UNKNOWN)
requirements:
  - Python 3.9 or newer on the target
  - kvmcheck.pyz on the target (O(pyz)), or kvmcheck (Python package) importable by the target's Python
options:
  root:
    description:
      - Inspect the system under this directory instead of the running host
        (a Kickstart target, a mounted image, a captured tree).
      - With a root other than V(/), the probes of the running kernel (test guest, acceleration) are skipped.
    type: path
    default: /
  only:
    description:
      - Run only the checks whose id matches one of these glob patterns (for example V(kvm.*)).
    type: list
    elements: str
  skip:
    description:
      - Do not run the checks whose id matches one of these glob patterns.
    type: list
    elements: str
  profile:
    description:
      - What the host is for, as a built-in or user profile name (C(kvmcheck profiles) lists them).
      - Passed to kvmcheck only when set.
    type: str
  config:
    description:
      - A kvmcheck TOML configuration file on the target (settings, severity overrides, ignores).
      - Passed to kvmcheck only when set.
    type: path
  strict:
    description:
      - Warnings also make the host not ready.
    type: bool
    default: false
  timeout:
    description:
      - Time limit for each check, in seconds.
    type: float
    default: 5.0
  fail_on_not_ready:
    description:
      - Fail the task when the verdict is not ready; the message names the failing checks.
      - When false (the default) the task succeeds whatever the verdict, and the verdict is in the result.
    type: bool
    default: false
  pyz:
    description:
      - Path of C(kvmcheck.pyz) on the target (built with C(python3 -m kvmcheck.tools.build)); kvmcheck is imported
        from it, ahead of any installed copy. Nothing needs to be installed on the target then.
      - When not set, kvmcheck must be importable by the target's Ansible Python interpreter.
    type: path
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs unchanged in check mode.
  diff_mode:
    support: none
    description: The module changes nothing, so there is no difference to show.
  facts:
    support: full
    description: The report is returned as the fact C(ansible_facts.kvmcheck).
notes:
  - The report follows kvmcheck's JSON schema (C(kvmcheck schema) prints it).
  - Run with C(become=true) for a complete audit of the running host; some checks read files only root may read.
seealso:
  - name: kvmcheck README
    description: The checks, the report formats and the fleet view.
    link: https://pypi.org/project/kvmcheck/
"""

EXAMPLES = r"""
- name: Audit the host; never fail, every host reports
  kvmcheck.kvmcheck.kvmcheck_facts:

- name: Show the verdict
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ ansible_facts.kvmcheck.verdict }}"

- name: Fail hosts that are not ready, warnings count too, only the KVM and CPU checks
  kvmcheck.kvmcheck.kvmcheck_facts:
    only: ["cpu.*", "kvm.*"]
    strict: true
    fail_on_not_ready: true

- name: Audit a Kickstart target mounted at /mnt/sysimage with a profile, skipping the storage checks
  kvmcheck.kvmcheck.kvmcheck_facts:
    root: /mnt/sysimage
    profile: migration-pool
    skip: ["storage.*"]
    timeout: 10

- name: Write one JSON report per host on the controller
  ansible.builtin.copy:
    content: "{{ ansible_facts.kvmcheck | to_nice_json }}"
    dest: "reports/{{ inventory_hostname }}.json"
  delegate_to: localhost
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: success
  type: dict
  contains:
    kvmcheck:
      description:
        - The kvmcheck JSON report (schema_version 2), as C(kvmcheck check --format json) prints it.
      returned: success
      type: dict
      contains:
        schema_version:
          description: Version of the report schema.
          type: int
          sample: 2
        tool:
          description: Name and version of kvmcheck.
          type: dict
          sample: {"name": "kvmcheck", "version": "0.1.0"}
        generated_at:
          description: When the report was made (ISO 8601, UTC).
          type: str
          sample: "2026-01-01T00:00:00+00:00"
        host:
          description: Facts about the inspected system (hostname, architecture, kernel, CPU, root).
          type: dict
        verdict:
          description: V(ready), V(not-ready) or V(unknown) (no evidence for a verdict).
          type: str
          sample: ready
        verdict_reason:
          description: One sentence saying why this verdict.
          type: str
        fix_first:
          description: The checks to act on first (root causes of a not-ready verdict, or what an unknown one lacks).
          type: list
          elements: str
        pending:
          description:
            - Changes configured but not yet in effect, by the step that makes them effective (V(reboot),
              V(relogin), V(module-reload), V(regenerate-bootloader), V(service-restart), V(power-cycle)), each with its check ids.
            - Absent when nothing is pending.
          type: dict
          sample: {"reboot": ["iommu.enabled"]}
        strict:
          description: Whether warnings counted as blocking.
          type: bool
        summary:
          description: Number of checks per status.
          type: dict
          sample: {"pass": 20, "warn": 3, "fail": 0, "error": 0, "skip": 2}
        checks:
          description: One entry per check (id, title, status, summary, detail, remediation, evidence, duration_ms).
          type: list
          elements: dict
verdict:
  description: V(ready), V(not-ready) or V(unknown), the same as RV(ansible_facts.kvmcheck.verdict).
  returned: when kvmcheck ran
  type: str
  sample: not-ready
ready:
  description: Whether the host is ready for KVM guests.
  returned: when kvmcheck ran
  type: bool
  sample: false
failed_checks:
  description: Ids of the checks that make the host not ready (failures, errors, and with O(strict) warnings).
  returned: when kvmcheck ran
  type: list
  elements: str
  sample: ["cpu.virt-flags", "firmware.vt-enabled"]
fix_first:
  description: The checks to act on first, the same as RV(ansible_facts.kvmcheck.fix_first).
  returned: when kvmcheck ran
  type: list
  elements: str
  sample: ["firmware.vt-enabled"]
pending:
  description:
    - Changes configured but not yet in effect, by the step that makes them effective, the same as
      RV(ansible_facts.kvmcheck.pending), or an empty dict.
    - "A play can reboot the hosts that wait for it: C(when: result.pending.reboot is defined)."
  returned: when kvmcheck ran
  type: dict
  sample: {"reboot": ["iommu.enabled"], "relogin": ["kvm.device"]}
summary:
  description: Number of checks per status, the same as RV(ansible_facts.kvmcheck.summary).
  returned: when kvmcheck ran
  type: dict
  sample: {"pass": 20, "warn": 3, "fail": 2, "error": 0, "skip": 2}
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
  sample: false
"""

import contextlib
import io
import os
import sys
import traceback

from ansible.module_utils.basic import AnsibleModule

INSTALL_HINT = (
    "kvmcheck is not importable by the Python interpreter Ansible uses on this host ({python}): {error}. "
    "Copy kvmcheck.pyz (python3 -m kvmcheck.tools.build) to the host and pass its path as the pyz option, "
    "or run the collection's playbook kvmcheck.kvmcheck.audit, which does that; "
    "or install it for that interpreter: '{python} -m pip install kvmcheck' (a local path or wheel), "
    "or point ansible_python_interpreter at a Python that has kvmcheck."
)


def import_kvmcheck(pyz):
    """kvmcheck from pyz (kvmcheck.pyz on the target, first on sys.path) or from the interpreter's packages.

    Returns (module, None) or (None, traceback text)."""
    if pyz:
        sys.path.insert(0, pyz)  # a zipapp imports as it is: zipimport reads its modules and data
    try:
        import kvmcheck
    except Exception:  # ImportError, or a broken install
        return None, traceback.format_exc()
    return kvmcheck, None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            only=dict(type="list", elements="str"),
            skip=dict(type="list", elements="str"),
            profile=dict(type="str"),
            config=dict(type="path"),
            strict=dict(type="bool", default=False),
            timeout=dict(type="float", default=5.0),
            fail_on_not_ready=dict(type="bool", default=False),
            pyz=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["pyz"] is not None and not os.path.isfile(params["pyz"]):
        module.fail_json(msg="pyz %r is not a file (copy kvmcheck.pyz to the host first)" % params["pyz"],
                         changed=False)
    kvmcheck, import_error = import_kvmcheck(params["pyz"])
    if kvmcheck is None:
        last = (import_error or "").strip().splitlines()[-1:] or ["ImportError"]
        module.fail_json(msg=INSTALL_HINT.format(python=sys.executable, error=last[0]),
                         exception=import_error, changed=False)
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %s" % params["timeout"], changed=False)
    if not os.path.isdir(params["root"]):
        module.fail_json(msg="root %r is not a directory" % params["root"], changed=False)

    options = dict(strict=params["strict"], timeout=params["timeout"])
    for name in ("profile", "config"):  # only when given: older kvmcheck releases may not know them
        if params[name] is not None:
            options[name] = params[name]
    # A module's stdout is its JSON result: keep anything kvmcheck might print out of it.
    stray = io.StringIO()
    try:
        with contextlib.redirect_stdout(stray), contextlib.redirect_stderr(stray):
            report = kvmcheck.run(params["root"], params["only"] or None, params["skip"] or None, **options)
            data = report.to_dict()
    except (ValueError, TypeError, OSError) as exc:  # bad selection, configuration or profile; unreadable root
        module.fail_json(msg="kvmcheck could not run: %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc(), changed=False)

    failed_checks = [r.id for r in report.blocking]
    result = dict(
        changed=False,
        ansible_facts=dict(kvmcheck=data),
        verdict=data["verdict"],
        ready=data["verdict"] == "ready",
        failed_checks=failed_checks,
        fix_first=data.get("fix_first", failed_checks),
        pending=data.get("pending", {}),  # older kvmcheck releases have no pending changes
        summary=data["summary"],
    )
    if stray.getvalue().strip():
        module.warn("kvmcheck printed: %s" % stray.getvalue().strip()[:2000])
    if params["fail_on_not_ready"] and not result["ready"]:
        if data["verdict"] == "unknown":  # nothing failed, but there is no evidence that the host is ready
            module.fail_json(msg="no verdict for this host (unknown): %s" % data.get("verdict_reason", ""), **result)
        by_id = {c["id"]: c for c in data["checks"]}
        named = ", ".join("%s (%s: %s)" % (i, by_id[i]["status"], by_id[i]["summary"]) for i in failed_checks)
        module.fail_json(msg="host is not ready for KVM guests; failing checks: %s" % named, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
