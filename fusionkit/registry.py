"""Component registry.

Every block, loss, encoder, head and model of fusionkit is reachable by name::

    import fusionkit
    fusionkit.list_components(kind="adapter")
    sa = fusionkit.create("self_attention_adapter", d_in=74, d_model=64)

Built-ins are declared with :func:`register` and added to the registry through the same pluggy hook
(``fusionkit_register_components``) that third-party plug-ins implement, so both paths are identical.
Plug-ins are discovered lazily, on the first call that needs the registry.

Imports go one way: :mod:`fusionkit.plugins` uses this module, never the reverse. The function that builds the
registry (built-ins + discovered plug-ins, :func:`fusionkit.plugins.manager.build_registry`) is handed to
:func:`set_registry_builder` when the ``fusionkit`` package is imported.
"""
from __future__ import annotations

import contextvars
import difflib
import inspect
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

KINDS: tuple[str, ...] = ("adapter", "memory", "fusion", "loss", "encoder", "head", "model")


class RegistryError(ValueError):
    """A component could not be registered (bad kind, name clash)."""


_RST_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :class:`~a.b.C` → C, :func:`f` → f
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bet al)(?<!\bcf)(?<!\bvs)\.(?=\s+[A-Z(\"'`]|\s*$)")


def plain_text(text: str) -> str:
    """RST inline markup as plain text: ``x`` → x, :class:`~a.b.C` → C, *x* → x; whitespace collapsed."""
    text = _RST_ROLE.sub(lambda m: m.group(1).split(".")[-1] if "~" in m.group(0) else m.group(1), text)
    text = text.replace("``", "").replace("\\", "")
    text = re.sub(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])", r"\1", text)
    return " ".join(text.split())


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, whole, as plain text."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    text = plain_text(paragraph)
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text


class ComponentSpec:
    """A registered component: ``name``, ``kind``, the ``plugin`` that provided it and its ``factory``.

    A built-in entry is *lazy*: its name, kind, description and signature come from the static index
    (``meta``), and its module is imported the first time ``factory`` is read, so listing names imports nothing.
    """

    __slots__ = ("name", "kind", "plugin", "_factory", "_loader", "meta")

    def __init__(self, name: str, kind: str, factory: Callable | None = None, plugin: str = "fusionkit", *,
                 loader: Callable[[], Callable] | None = None, meta: dict | None = None) -> None:
        if (factory is None) == (loader is None):
            raise RegistryError(f"component {name!r} needs exactly one of factory and loader")
        self.name, self.kind, self.plugin = name, kind, plugin
        self._factory, self._loader, self.meta = factory, loader, meta

    @property
    def factory(self) -> Callable:
        if self._factory is None:
            with _lock:
                if self._factory is None:
                    self._factory = self._loader()
        return self._factory

    @property
    def loaded(self) -> bool:
        """Whether the factory's module has been imported (always for eager entries)."""
        return self._factory is not None

    @property
    def doc(self) -> str:
        """The factory's first docstring sentence, whole, as plain text."""
        if self.meta is not None and "doc" in self.meta:
            return self.meta["doc"]
        return first_sentence(self.factory.__doc__)

    def __repr__(self) -> str:
        return f"ComponentSpec(name={self.name!r}, kind={self.kind!r}, plugin={self.plugin!r})"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    resolve: Callable  # (root: Path) -> fusionkit.data.api.Source
    read: Callable  # (source, *, seed, report) -> {split: [RawSegment]}
    plugin: str
    description: str = ""  # one line for ``fusionkit list --kind dataset``

    @property
    def builtin(self) -> bool:
        """Whether fusionkit itself registered it (a name then resolves before a path of that name)."""
        return self.plugin == "fusionkit"


class DatasetTable:
    """Datasets by name: fusionkit's own and those plug-ins add (hook ``fusionkit_register_datasets``):
    ``datasets.add(name, resolve=, read=, description=)``."""

    def __init__(self, owner: "Registry") -> None:
        self._owner = owner
        self._specs: dict[str, DatasetSpec] = {}

    def add(self, name: str, *, resolve: Callable, read: Callable, override: bool = False,
            description: str = "") -> None:
        if not isinstance(name, str) or not name or name != name.lower():
            raise RegistryError(f"dataset name must be a non-empty lower-case string, got {name!r}")
        if not callable(resolve) or not callable(read):
            raise RegistryError(f"dataset {name!r}: resolve and read must be callables")
        taken = self._specs.get(name)
        if taken is not None and taken.builtin and self._owner._current_plugin != taken.plugin:
            raise RegistryError(f"dataset name {name!r} from plug-in {self._owner._current_plugin!r} is a built-in "
                                f"dataset of fusionkit, which cannot be replaced; choose another name")
        if taken is not None and not override:
            raise RegistryError(f"dataset name {name!r} from plug-in {self._owner._current_plugin!r} is already "
                                f"registered by plug-in {taken.plugin!r}; choose another name or pass override=True")
        self._specs[name] = DatasetSpec(name, resolve, read, self._owner._current_plugin, str(description))

    def get(self, name: str) -> DatasetSpec | None:
        return self._specs.get(name)

    def names(self, *, builtin: bool | None = None) -> list[str]:
        """fusionkit's own names in their order, then the plug-ins' sorted (``builtin``: only the one or the
        other)."""
        own = [n for n, s in self._specs.items() if s.builtin]
        added = sorted(n for n, s in self._specs.items() if not s.builtin)
        return (own if builtin is not False else []) + (added if builtin is not True else [])


class Registry:
    """Name → factory table handed to plug-ins (``registry.add(name, factory, kind=...)``), and the plug-ins'
    datasets (``registry.datasets``)."""

    def __init__(self) -> None:
        self._specs: dict[str, ComponentSpec] = {}
        self._current_plugin = "fusionkit"
        self.datasets = DatasetTable(self)

    # -- used by plug-ins -------------------------------------------------------------------------
    def add(self, name: str, factory: Callable, *, kind: str, override: bool = False) -> None:
        """Register ``factory`` under ``name``; a taken name is an error unless ``override=True``."""
        _check_kind(kind)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"component name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise RegistryError(f"factory for component {name!r} is not callable: {factory!r}")
        taken = self._specs.get(name)
        if taken is not None and not override:
            raise RegistryError(
                f"component name {name!r} (kind {kind!r}) from plug-in {self._current_plugin!r} is already "
                f"registered by plug-in {taken.plugin!r}; choose another name or pass override=True"
            )
        self._specs[name] = ComponentSpec(name=name, kind=kind, factory=factory, plugin=self._current_plugin)

    def add_lazy(self, name: str, loader: Callable[[], Callable], *, kind: str, meta: dict) -> None:
        """Register ``name`` whose factory ``loader()`` returns on first use (built-ins, from their static index);
        ``meta`` holds what listing needs without importing it (``doc``, ``signature``, a model's ``slots``)."""
        _check_kind(kind)
        taken = self._specs.get(name)
        if taken is not None:
            raise RegistryError(f"component name {name!r} (kind {kind!r}) is declared twice (plug-ins "
                                f"{taken.plugin!r} and {self._current_plugin!r})")
        self._specs[name] = ComponentSpec(name=name, kind=kind, loader=loader, plugin=self._current_plugin,
                                          meta=meta)

    # -- lookup -------------------------------------------------------------------------------------
    def get(self, name: str) -> ComponentSpec:
        try:
            return self._specs[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._specs), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(
                f"unknown component {name!r}{hint} (see `python -m fusionkit list` for all "
                f"{len(self._specs)} registered components)"
            ) from None

    def create(self, name: str, **kwargs):
        return self.get(name).factory(**kwargs)

    def names(self, kind: str | None = None) -> list[str]:
        if kind is not None:
            _check_kind(kind)
        return sorted(n for n, s in self._specs.items() if kind is None or s.kind == kind)

    def specs(self) -> Iterable[ComponentSpec]:
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


# -- built-in declarations --------------------------------------------------------------------------
# ``@register`` only records the declaration; the plug-in of the declaring package adds the records to the
# registry (``fusionkit.plugins.builtin`` for fusionkit's blocks, the entry points ``baselines`` and ``recipes``
# of fusionkit's distribution for its models), see :func:`add_declarations`.
_BUILTIN_DECLARATIONS: list[tuple[str, str, Callable]] = []


def register(name: str, *, kind: str):
    """Decorator declaring a component of fusionkit's own distribution (a factory or an ``nn.Module`` class).

    The declaration is added to the registry by the plug-in of the package that holds the factory, through
    :func:`add_declarations`; a third-party plug-in calls ``registry.add`` in its hook instead."""
    _check_kind(kind)

    def deco(factory):
        _BUILTIN_DECLARATIONS.append((name, kind, factory))
        return factory

    return deco


def add_declarations(registry: Registry, package: str) -> None:
    """Add the ``@register`` declarations whose factory is defined in ``package`` (or a module below it)."""
    for name, kind, factory in list(_BUILTIN_DECLARATIONS):
        module = getattr(factory, "__module__", "") or ""
        if module == package or module.startswith(package + "."):
            registry.add(name, factory, kind=kind)


_lock = threading.RLock()
_registry: Registry | None = None
_builder: Callable[[], Registry] | None = None


def set_registry_builder(builder: Callable[[], Registry]) -> None:
    """Set the function that builds the process-wide registry (``fusionkit/__init__.py`` sets the plug-in
    manager's); the registry is rebuilt with it on next use."""
    global _builder, _registry
    with _lock:
        _builder, _registry = builder, None


def get_registry() -> Registry:
    """The process-wide registry, built (built-ins + discovered plug-ins) on first use."""
    global _registry
    with _lock:
        if _registry is None:
            if _builder is None:
                raise RegistryError("no registry builder is set; import fusionkit (the package) first")
            _registry = _builder()
        return _registry


def reset_registry() -> None:
    """Forget the registry so that the next call rebuilds it (tests; after installing a plug-in)."""
    global _registry
    with _lock:
        _registry = None


def create(name: str, **kwargs):
    """Build the registered component ``name`` with keyword arguments ``kwargs``."""
    return get_registry().create(name, **kwargs)


def list_components(kind: str | None = None) -> list[str]:
    """Sorted names of registered components, optionally of one ``kind``."""
    return get_registry().names(kind)


# The variant whose base factory is running (name, its signature, its base): blocks built inside the base name
# the variant in their errors and compare options with the variant's defaults, not the base's.
_building_variant: contextvars.ContextVar = contextvars.ContextVar("fusionkit_building_variant", default=None)


def building_variant(factory: Callable) -> tuple[str, inspect.Signature] | None:
    """``(variant name, variant signature)`` when ``factory`` runs as the base of a variant being built."""
    current = _building_variant.get()
    if current is None:
        return None
    name, signature, base = current
    while base is not None:
        if base is factory:
            return name, signature
        base = getattr(base, "variant_of", (None,))[0]
    return None


def register_variant(name: str, base: Callable, *, kind: str = "model", doc: str,
                     train_defaults: dict | None = None, **fixed):
    """Declare a timm-style variant: a built-in factory that calls ``base`` with some arguments fixed.

    The variant's signature is ``base``'s with the defaults of ``fixed`` replaced, so option checks and
    ``--set`` see the same arguments; a caller may still pass any of them explicitly. ``train_defaults``: a
    training recipe of the variant's own, laid over the base model's ``train_defaults`` on every model it
    builds (same computation, another recipe, e.g. ``mag_mmsa``).
    """
    params = inspect.signature(base).parameters
    unknown = sorted(set(fixed) - set(params))
    if unknown:
        raise RegistryError(f"variant {name!r} fixes {', '.join(unknown)}, which {base.__name__} does not accept")
    recipe = dict(train_defaults or {})

    def factory(**kwargs):
        # the outermost variant names the build (a variant of a variant keeps the outer one)
        token = _building_variant.set((name, factory.__signature__, base)) if _building_variant.get() is None else None
        try:
            model = base(**{**fixed, **kwargs})
        finally:
            if token is not None:
                _building_variant.reset(token)
        if recipe:  # the engine reads ``train_defaults`` from the built model, so the instance carries the recipe
            model.train_defaults = {**(getattr(model, "train_defaults", None) or {}), **recipe}
        return model

    factory.__signature__ = inspect.signature(base).replace(
        parameters=[p.replace(default=fixed[n]) if n in fixed else p for n, p in params.items()])
    factory.__name__ = factory.__qualname__ = f"build_{name}"
    factory.__module__ = base.__module__
    factory.__doc__ = doc
    factory.variant_of = (base, dict(fixed))
    factory.train_defaults = dict(recipe)  # a copy: changing it does not change what the factory builds
    return register(name, kind=kind)(factory)
