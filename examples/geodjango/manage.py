#!/usr/bin/env python3
"""Django's command-line entry point for the GeoDjango example."""

import os
import sys
from pathlib import Path

# keel_django is not installed as a package: it lives in the same repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "contrib" / "django"))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geodeals.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
