"""`python -m probpose {predict,train} ...`"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from probpose import predict_cli, train

    parser = argparse.ArgumentParser(prog="python -m probpose", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    predict_cli.add_parser(sub)  # sets func=...
    train.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
