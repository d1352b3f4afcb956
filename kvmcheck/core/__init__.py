# SPDX-License-Identifier: GPL-2.0-or-later
"""The engine: the Host seam, the model, check registration, the runner, configuration and rendering."""
