"""``python -m fusionkit list [--kind KIND] [--json]``: every registered component with its kind, plug-in and
description, then each model's slots with their default blocks (``--kind dataset``: the registered datasets,
fusionkit's own and the plug-ins'). ``python -m fusionkit show NAME``: a model's
slots and their contracts, or a component's kind, plug-in, constructor and the model slots that take its kind.

Built-in components are described from the static index (:mod:`fusionkit.plugins.index`), so both commands
answer without importing torch or any model; a third-party plug-in's components are described by importing it.
"""
from __future__ import annotations

import inspect
import json
import sys
from types import SimpleNamespace

from fusionkit.cli import ArgumentParser, UsageError, run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] in ("extract", "predict"):  # features from clips, scores for new clips
        from fusionkit.extract.cli import main as extract_main

        return extract_main(list(args_in))
    parser = ArgumentParser(prog="python -m fusionkit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("extract", help="word-aligned features from clips and word timings (docs/extraction.md)")
    sub.add_parser("predict", help="score new clips with a run trained on extracted features")
    p_list = sub.add_parser("list", help="list registered components and each model's slots")
    p_list.add_argument("--kind", default=None, help="only this kind (dataset: the registered datasets)")
    p_list.add_argument("--json", action="store_true", help="one JSON array: name, kind, plugin, description "
                                                            "(and a model's slot defaults)")
    p_show = sub.add_parser("show", help="a model's slots and their contracts, or one component")
    p_show.add_argument("name", help="a registered model or component")
    args = parser.parse_args(argv)

    from fusionkit.registry import KINDS, get_registry

    try:
        registry = get_registry()
        if args.command == "list" and args.kind is not None and args.kind not in (*KINDS, "dataset"):
            raise ValueError(f"unknown kind {args.kind!r}; expected one of {', '.join(KINDS)}, dataset")
        if args.command == "show":
            registry.get(args.name)
    except Exception as exc:  # noqa: BLE001 - CLI boundary
        raise UsageError(str(exc).strip("'\"")) from None
    if args.command == "show":
        return _show(registry, args.name)
    if args.kind == "dataset":
        return _list_datasets(registry, as_json=args.json)
    specs = sorted((s for s in registry.specs() if args.kind is None or s.kind == args.kind),
                   key=lambda s: (s.kind, s.name))
    if args.json:
        print(json.dumps([{"name": s.name, "kind": s.kind, "plugin": s.plugin, "description": s.doc,
                           **({"slots": _slot_defaults(registry, s.name)} if s.kind == "model" else {})}
                          for s in specs], indent=1))
        return 0
    _print_table([(s.name, s.kind, s.plugin, s.doc) for s in specs])
    models = [s.name for s in specs if s.kind == "model"]
    if models:
        print("\nslots (model: slot=default block; `python -m fusionkit show MODEL` for the contracts)")
        for model in models:
            defaults = _slot_defaults(registry, model)
            print(f"{model}: " + (", ".join(f"{k}={v}" for k, v in defaults.items()) or "(none declared)"))
    return 0


def _list_datasets(registry, *, as_json: bool) -> int:
    """The dataset names ``load_splits`` and ``--dataset`` take: fusionkit's own in their order, then the plug-ins'."""
    specs = [registry.datasets.get(n) for n in registry.datasets.names()]
    if as_json:
        print(json.dumps([{"name": s.name, "kind": "dataset", "plugin": s.plugin, "description": s.description}
                          for s in specs], indent=1))
        return 0
    _print_table([(s.name, "dataset", s.plugin, s.description) for s in specs])
    return 0


def _print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """``name  kind  plugin  description`` rows, the first two columns padded to their widest entry."""
    width = max((len(r[0]) for r in rows), default=4)
    plugin_width = max((len(r[2]) for r in rows), default=6)
    print(f"{'name':<{width}}  {'kind':<8}  {'plugin':<{plugin_width}}  description")
    for name, kind, plugin, description in rows:
        print(f"{name:<{width}}  {kind:<8}  {plugin:<{plugin_width}}  {description}")


def _slots_of(registry, model: str) -> dict:
    """``{slot: Slot-like}`` from the index for a built-in model not yet imported, else from the model itself."""
    spec = registry.get(model)
    if spec.meta is not None and not spec.loaded:
        return {s["name"]: SimpleNamespace(**s) for s in spec.meta.get("slots", [])}
    from fusionkit.slots import slots_of

    return slots_of(model)


def _slot_defaults(registry, model: str) -> dict:
    spec = registry.get(model)
    if spec.meta is not None and not spec.loaded:
        return dict(spec.meta.get("slot_defaults", {}))
    from fusionkit.slots import slot_defaults

    return slot_defaults(model)


def _show(registry, name: str) -> int:
    slots_of = lambda model: _slots_of(registry, model)  # noqa: E731
    slot_defaults = lambda model: _slot_defaults(registry, model)  # noqa: E731

    spec = registry.get(name)
    print(f"{spec.name}  ({spec.kind}, plug-in {spec.plugin})  {spec.doc}")
    if spec.kind == "model":
        indexed = spec.meta if spec.meta is not None and not spec.loaded else None
        _show_search_space(name, indexed)
        slots = slots_of(name)
        if not slots:
            print("declares no slots")
            return 0
        defaults = slot_defaults(name)
        print("slots — value: a registered block name, or {\"name\": NAME, **kwargs} (command line: "
              f"--set {name}.SLOT=NAME or --set '{name}.SLOT={{\"name\": \"NAME\", \"key\": 1}}'):")
        for slot in slots.values():
            fitting = ", ".join(registry.names(slot.kind))
            print(f"\n  {slot.name}  (default {defaults[slot.name]}{'; true / false' if slot.optional else ''})")
            print(f"    kind        {slot.kind}  (registered: {fitting})")
            print(f"    built as    block({', '.join(f'{k}=…' for k in slot.keywords)})"
                  + (f"  + when it takes them: {', '.join(slot.options)}" if slot.options else ""))
            print(f"    called as   {slot.call}")
            print(f"    returns     {slot.returns}")
            if slot.note:
                print(f"    note        {slot.note}")
        print("\nmask convention: (B, T) bool, True = real token; None = no padding")
        if indexed is not None:
            summary = indexed.get("summary")
        else:
            summary = getattr(spec.factory, "summary", None)  # e.g. a staged model's stages and sizes
            summary = summary() if callable(summary) else None
        if summary:
            print("\n" + summary)
        return 0
    signature = spec.meta.get("signature") if spec.meta is not None and not spec.loaded else None
    if signature is None:
        try:
            signature = str(inspect.signature(spec.factory))
        except (TypeError, ValueError):
            pass
    if signature is not None:
        print(f"constructor: {spec.name}{signature}")
    takers = []
    for model in registry.names("model"):
        takers += [f"{model}.{slot.name}" for slot in slots_of(model).values() if slot.kind == spec.kind]
    if takers:
        print(f"slots that take a {spec.kind!r} block (a dry run at build time checks the fit): {', '.join(takers)}")
    return 0


def _show_search_space(name: str, indexed: dict | None = None) -> None:
    """The model's tuning search space (:mod:`fusionkit.search`): from the built-in index, or read from the model
    built on the meta device."""
    if indexed is not None:
        lines = indexed.get("search_space")
    else:
        from fusionkit.search import search_space_of

        space = search_space_of(name)
        lines = space.describe() if space is not None else None
    print("\n".join(lines) if lines is not None else
          "search space: none declared (python -m benchmarks.tune refuses it)")
    print()


if __name__ == "__main__":
    sys.exit(main())
