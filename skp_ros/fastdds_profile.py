"""Where the shipped Fast DDS profile is installed, and the `skp-fastdds-profile` command.

Fast DDS reads an XML profile named by an environment variable before the first participant
is created. Jazzy's wheels and debs ship Fast DDS 2.14, which reads only
``FASTRTPS_DEFAULT_PROFILES_FILE``; Fast DDS 3 (Kilted and later) reads
``FASTDDS_DEFAULT_PROFILES_FILE``. Setting both works everywhere.

The profile is installed by ``setup.py``'s ``data_files`` into ``<prefix>/share/skp_ros/config``
where ``<prefix>`` is the install prefix of the code itself: the virtual environment for a pip
install, ``install/skp_ros`` for a colcon install. A source checkout (or an editable install)
uses ``config/`` of the checkout. Only the standard library is imported here, so the command
answers at once.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "skp_ros"
PROFILE_NAME = "fastdds_profile.xml"
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
"""Fast DDS 2.x (Jazzy) reads the first, Fast DDS 3.x (Kilted and later) the second."""

_SITE_DIRS = ("site-packages", "dist-packages")
_LIB_DIRS = ("lib", "lib64")
_PACKAGE_DIR = Path(__file__).resolve().parent


def install_prefix(package_dir: Path = _PACKAGE_DIR) -> Path | None:
    """The prefix of a package installed in ``<prefix>/lib/pythonX.Y/site-packages``, else None."""
    site = package_dir.parent
    lib = site.parent.parent
    if site.name in _SITE_DIRS and lib.name in _LIB_DIRS:
        return lib.parent
    return None


def profile_candidates(package_dir: Path = _PACKAGE_DIR) -> list[Path]:
    """Where the profile may be, in order: the code's own install prefix, then the source tree."""
    candidates = []
    prefix = install_prefix(package_dir)
    if prefix is not None:
        candidates.append(prefix / "share" / PACKAGE / "config" / PROFILE_NAME)
    candidates.append(package_dir.parent / "config" / PROFILE_NAME)
    return candidates


def fastdds_profile_path(package_dir: Path = _PACKAGE_DIR) -> Path:
    """Absolute path of the installed profile; FileNotFoundError naming the places looked in."""
    candidates = profile_candidates(package_dir)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{PROFILE_NAME} is not installed (looked in: {looked})")


def export_lines(path: Path) -> list[str]:
    """Shell ``export`` lines setting every profile variable to `path`."""
    return [f"export {name}={shlex.quote(str(path))}" for name in PROFILE_VARIABLES]


def _parser() -> argparse.ArgumentParser:
    """Command-line interface of ``skp-fastdds-profile``."""
    parser = argparse.ArgumentParser(
        prog="skp-fastdds-profile",
        description=(
            "Print the absolute path of skp's Fast DDS profile as installed (32 MB "
            "shared-memory segment for image streams, UDP restricted to loopback)."
        ),
        epilog='Typical use: eval "$(skp-fastdds-profile --export)"',
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help=f"print shell export lines for {' and '.join(PROFILE_VARIABLES)} instead",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``skp-fastdds-profile``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        path = fastdds_profile_path()
    except FileNotFoundError as exc:
        print(f"skp-fastdds-profile: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(export_lines(path)) if args.export else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
