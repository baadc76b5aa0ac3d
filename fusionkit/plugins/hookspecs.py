"""The hooks of fusionkit's plug-in system: components and datasets."""
import pluggy

PROJECT_NAME = "fusionkit"
ENTRY_POINT_GROUP = "fusionkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def fusionkit_register_components(registry):
    """Add components to ``registry`` by calling ``registry.add(name, factory, kind=...)``.

    ``kind`` is one of ``adapter``, ``memory``, ``fusion``, ``loss``, ``encoder``, ``head``, ``model``.
    Re-using a name that is already taken raises unless ``override=True`` is passed.
    """


@hookspec
def fusionkit_register_datasets(datasets):
    """Add datasets by name: ``datasets.add(name, resolve=..., read=..., description="one line")``.

    fusionkit's own datasets are added through this hook too (:mod:`fusionkit.plugins.builtin`,
    :mod:`fusionkit.data.builtin_datasets`). ``resolve(root: Path) -> fusionkit.data.api.Source``: where the data is
    (``root``: the data directory, ``FUSIONKIT_DATA``), raising :class:`fusionkit.data.DataError` naming what to put
    where when it is missing; the returned ``Source`` says whether its channels are simulated. ``read(source, *,
    seed, report) -> {split: [RawSegment]}`` with the splits ``train``, ``valid`` and ``test``; a ``Source`` of one of
    fusionkit's formats (:data:`fusionkit.data.readers.FORMAT_READERS`) keeps that format and may be read with
    ``read=fusionkit.data.readers.read_source``, as fusionkit's own datasets are; any other format is recorded as
    ``plugin``. ``fusionkit.data.load_splits(name)`` then loads it like a built-in dataset (tokenized, cached,
    subsampled); ``python -m fusionkit list --kind dataset`` lists it. A built-in dataset name cannot be taken
    (not even with ``override=True``). The cache key is the content of ``source.path`` (a file or a directory); a
    source without a path is cached by name and seed only, so pass ``cache=False`` while its reader changes.
    """
