# SPDX-License-Identifier: GPL-2.0-or-later
"""`python -m kvmcheck`: exactly the console script (cli.main names the program kvmcheck, not __main__.py)."""
from kvmcheck.cli import main

if __name__ == "__main__":
    main()
