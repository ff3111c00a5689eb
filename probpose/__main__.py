"""`python -m probpose predict ...` (training: `python -m training`, evaluation: `python -m analysis`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from probpose import predict_cli

    parser = argparse.ArgumentParser(prog="python -m probpose", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    predict_cli.add_parser(sub)  # sets func=...
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
