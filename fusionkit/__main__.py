"""``python -m fusionkit list [--kind KIND]``: every registered component with its kind and plug-in."""
from __future__ import annotations

import sys

from fusionkit.cli import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = ArgumentParser(prog="python -m fusionkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list registered components")
    p_list.add_argument("--kind", default=None, help="only this kind")
    args = parser.parse_args(argv)

    from fusionkit.registry import KINDS, get_registry

    try:
        registry = get_registry()
        if args.kind is not None and args.kind not in KINDS:
            raise ValueError(f"unknown kind {args.kind!r}; expected one of {', '.join(KINDS)}")
    except Exception as exc:  # noqa: BLE001 - CLI boundary
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = [s for s in registry.specs() if args.kind is None or s.kind == args.kind]
    width = max((len(s.name) for s in specs), default=4)
    print(f"{'name':<{width}}  {'kind':<8}  {'plugin':<12}  description")
    for s in sorted(specs, key=lambda s: (s.kind, s.name)):
        print(f"{s.name:<{width}}  {s.kind:<8}  {s.plugin:<12}  {s.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
