# SPDX-License-Identifier: GPL-2.0-or-later
"""Jinja templates for kvmcheck's reports (package data of kvmcheck.reports)."""
