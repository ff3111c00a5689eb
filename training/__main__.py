"""`python -m training --config configs/<name>.toml [--resume ...] [--export ...]`"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from training import train

    parser = argparse.ArgumentParser(prog="python -m training", description=train.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    train.add_parser(sub)
    args = parser.parse_args(["train", *argv] if argv and argv[0] != "train" else (argv or ["train", "--help"]))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
