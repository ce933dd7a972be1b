"""``AnalysisDevice``: an ophyd device that computes derived data when triggered.

The values follow the rules of :func:`~bluesky_analysis_store.compose_analysis_run` (same value
checks, same default writer per key); big values go to files through our writers, announced with
StreamResource/StreamDatum (default) or Resource/Datum, the way area detectors announce theirs.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import event_model
from event_model.documents.stream_datum import StreamRange
from ophyd import Device
from ophyd.status import Status

from ..compose._keys import (
    RUN_UID_ATTRIBUTE,
    AssetForm,
    KeyLayout,
    check_asset_form,
    check_new_file,
    check_root,
    check_same_description,
    check_same_keys,
    compose_asset,
    data_key,
    lay_out_key,
    refused_value,
)
from ..compose._writer_choice import KeyWriter, normalize_writers
from ..core._errors import AnalysisInputError, AnalysisStoreError, StorageFullError
from ..core._files import fsync_path, is_storage_full, storage_full_error
from ..core._paths import check_name, contained_path
from ..core._staging import StagedFiles
from ..core._values import short_repr, to_json_value
from ..pairs._pairs import PairRegistry, default_registry
from ..pairs._protocols import Writer

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..core._documents import Datum, Resource, StreamDatum, StreamResource

    #: What ``collect_asset_docs`` yields (run_start, descriptor and seq_nums filled in later).
    Asset: TypeAlias = tuple[str, StreamResource | StreamDatum | Resource | Datum]


@dataclass
class _OpenFile:
    """One key's file while the device is staged."""

    writer: Writer
    bundle: Any  # event-model's ComposeStreamResourceBundle or ComposeResourceBundle
    temporary: Path
    annotate: Callable[[str, Mapping[str, str]], None] | None
    written: int = 0  # frames appended
    announced: int = 0  # frames covered by the stream_datum documents collected so far


class AnalysisDevice(Device):
    """An ophyd device whose reading is computed: ``compute()`` runs at every trigger.

    Use it in any bluesky plan, beside real detectors (``count([det, device])``,
    ``scan([det, device], motor, ...)``). Small values travel inside the events; DataFrames, empty
    arrays, arrays of more than 16 elements and complex values (or any key named in ``writers``) are
    appended to one file per key, created at the first trigger after :meth:`stage` as
    ``ROOT/RUN/NAME/KEY.SUFFIX`` under a temporary name and given their final name by
    :meth:`unstage`. ``RUN`` is :attr:`run_uid` when a plan sets it (as
    :func:`~bluesky_analysis_store.analyze` does), else a fresh UUID4 per staging.

    Parameters
    ----------
    compute : callable
        ``compute() -> {data_key: value}``: numbers, strings, numpy arrays, DataFrames, under
        the rules of ``compose_analysis_run``. Every call must return the same keys, each with
        the same dtype and shape, while the device is staged.
    name : str
        The device name; also a path segment: 1-128 characters from ``A-Z a-z 0-9 _ -``.
    root : str or Path
        Existing directory under which the files are written (for data read back through a
        tiled store: ``store.root``).
    writers : mapping, optional
        ``{data_key: spec name, WriterHandlerPair or DBEP 6 writers_dict entry}``, as for
        ``compose_analysis_run``, except that a DBEP 6 ``resource`` function is refused: the
        device chooses its file paths itself.
    registry : PairRegistry, optional
        Where spec names are looked up (default: every installed pair).
    asset_form : {"stream_resource", "resource"}
        ``"stream_resource"`` (default): file keys are declared ``external="STREAM:"``, left out
        of :meth:`read`, and announced with StreamResource/StreamDatum. ``"resource"``:
        declared ``external="FILESTORE:"``, read as datum ids, announced with Resource/Datum.
    **kwargs
        Passed to :class:`ophyd.Device` (``kind``, ``parent``, ...).

    Attributes
    ----------
    run_uid : str or None
        Set by a plan before :meth:`stage` to file the run's data under its uid (and record the
        uid in HDF5 files); cleared by :meth:`unstage`.
    file_attributes : dict of str
        String attributes written into each HDF5 file at :meth:`unstage` (e.g. the provenance
        JSON), beside the run uid.
    published : tuple of Path
        The files given their final names by the last :meth:`unstage`.

    Notes
    -----
    :meth:`describe` needs the keys and their shapes: when it is called before the first
    trigger (bluesky itself describes after triggering), ``compute()`` is called once and its
    result only described, never written. Trigger once per read: a read covers one new frame.
    """

    def __init__(
        self,
        compute: Callable[[], Mapping[str, Any]],
        *,
        name: str,
        root: str | Path,
        writers: Mapping[str, Any] | None = None,
        registry: PairRegistry | None = None,
        asset_form: AssetForm = "stream_resource",
        **kwargs: Any,
    ) -> None:
        check_name(name, "AnalysisDevice name")  # it becomes a directory name
        if not callable(compute):
            raise AnalysisInputError(
                f"AnalysisDevice {name!r}: compute={compute!r:.80} is not callable; give a "
                "function returning {data_key: value}"
            )
        check_asset_form(asset_form, f"AnalysisDevice {name!r}")
        super().__init__(name=name, **kwargs)
        # `root` is ophyd's name for a device's top ancestor: the directory is `file_root`.
        self.file_root = Path(root)
        self.registry = registry if registry is not None else default_registry()
        self.writers: dict[str, KeyWriter] = normalize_writers(writers, self.registry)
        for key, writer in self.writers.items():
            if writer.resource_func is not None:
                raise AnalysisInputError(
                    f"AnalysisDevice {name!r}: writers[{key!r}] has a DBEP 6 'resource' "
                    "function; the device names its files itself (ROOT/RUN/NAME/KEY.SUFFIX), so "
                    "give a spec name, a WriterHandlerPair, or an entry without 'resource'"
                )
        self.asset_form: AssetForm = asset_form
        self.run_uid: str | None = None
        self.file_attributes: dict[str, str] = {}
        self.published: tuple[Path, ...] = ()
        self._compute = compute
        self._layouts: dict[str, KeyLayout] | None = None  # learned by the first compute()
        self._staged_files: StagedFiles | None = None  # None: not staged
        self._writer_stack = contextlib.ExitStack()
        self._directory = ""
        self._open: dict[str, _OpenFile] = {}
        self._assets: deque[Asset] = deque()
        self._reading: dict[str, dict[str, Any]] | None = None
        self._triggers = 0  # since staging

    # -- values ------------------------------------------------------------------------------

    def _where(self, key: str | None = None) -> str:
        return f"AnalysisDevice {self.name!r}: compute()" + ("" if key is None else f"[{key!r}]")

    def _learn(self, values: Mapping[str, Any]) -> dict[str, KeyLayout]:
        """Each key's writer (compose_analysis_run's choice) and description."""
        unknown = sorted(set(self.writers) - set(values))
        if unknown:
            raise AnalysisInputError(
                f"{self._where()}: writers names keys {unknown} that compute() does not return; "
                f"it returns {sorted(values)}"
            )
        return {
            key: lay_out_key(self.name, key, value, self.writers, self.registry, self._where())
            for key, value in values.items()
        }

    def _check(self, values: Any) -> dict[str, KeyLayout]:
        """Validate one compute() result completely, before anything is written."""
        if not isinstance(values, Mapping) or not values:
            raise AnalysisInputError(
                f"{self._where()} must return a non-empty mapping {{data_key: value}}; got "
                f"{short_repr(values)}"
            )
        if self._layouts is None:
            return self._learn(values)
        check_same_keys(
            values,
            self._layouts,
            f"{self._where()} returned keys",
            "earlier",
            "every call must return the same keys",
        )
        for key, layout in self._layouts.items():
            check_same_description(
                layout,
                values[key],
                self._where(key),
                f"earlier values of {key!r} had",
                "until the device is unstaged",
            )
        return self._layouts

    # -- files -------------------------------------------------------------------------------

    def _open_file(self, layout: KeyLayout, value: Any) -> _OpenFile:
        assert layout.writer is not None
        assert self._staged_files is not None
        pair = layout.writer.pair
        file_root = layout.writer.root or self.file_root
        check_root(file_root, self._where(layout.key))
        path = contained_path(file_root, f"{self._directory}/{self.name}/{layout.key}{pair.suffix}")
        check_new_file(path, self._where(layout.key), f" (run_uid {self.run_uid!r} used twice?)")
        temporary = self._staged_files.stage(path, file_root)
        kwargs = pair.resource_kwargs(value, layout.description)
        writer = self._writer_stack.enter_context(pair.writer(str(temporary), **kwargs))
        # run_start, descriptor and seq_nums are filled in by the RunEngine's bundler.
        name, document, bundle = compose_asset(
            event_model.ComposeStreamResource(),
            event_model.ComposeResource(None),
            self.asset_form,
            pair,
            layout.key,
            path,
            file_root,
            kwargs,
        )
        self._assets.append((name, document))
        return _OpenFile(writer, bundle, temporary, pair.annotate)

    @contextlib.contextmanager
    def _typed_storage_errors(self) -> Iterator[None]:
        """A full disk, quota or file size limit as :class:`StorageFullError`."""
        try:
            yield
        except OSError as error:
            if isinstance(error, AnalysisStoreError) or not is_storage_full(error):
                raise
            where = self.file_root / self._directory / self.name
            raise storage_full_error(error, where, self.file_root, None) from error

    # -- the bluesky interface ---------------------------------------------------------------

    def stage(self) -> list[Any]:
        """Start a new set of files (they are created at the first trigger).

        Raises
        ------
        AnalysisStoreError
            If the device is already staged.
        AnalysisInputError
            If ``root`` is not an existing directory.
        """
        if self._staged_files is not None:
            raise AnalysisStoreError(
                f"AnalysisDevice {self.name!r} is already staged; unstage it before staging again"
            )
        check_root(self.file_root, f"AnalysisDevice {self.name!r}")
        if self.run_uid is not None:
            check_name(self.run_uid, f"AnalysisDevice {self.name!r}: run_uid")
        self._directory = self.run_uid or str(uuid.uuid4())
        self._staged_files = StagedFiles()
        self._reading = None
        self._triggers = 0
        return [self]

    def unstage(self) -> list[Any]:
        """Close, annotate, fsync and publish the files; idempotent.

        HDF5 files get :attr:`file_attributes` and the run uid as root attributes; every file
        then gets its final name, never replacing an existing file.
        """
        staged, self._staged_files = self._staged_files, None
        files, self._open = self._open, {}
        attributes = dict(self.file_attributes)
        if self.run_uid is not None:
            attributes[RUN_UID_ATTRIBUTE] = self.run_uid
        self.run_uid, self._layouts, self._reading = None, None, None
        self._assets.clear()
        if staged is None:
            return [self]
        try:
            with self._typed_storage_errors():
                self._writer_stack.close()
                for file in files.values():
                    if file.annotate is not None and attributes:
                        file.annotate(str(file.temporary), attributes)
                    fsync_path(file.temporary)  # our writers do; a third party's may not
                self.published = tuple(staged.publish())
        except BaseException:
            staged.discard()
            raise
        return [self]

    def trigger(self) -> Status:
        """Call ``compute()``, check every value, append file values; a finished Status.

        Raises
        ------
        AnalysisInputError
            A value the rules refuse, or whose keys, dtype or shape differ from the first.
        AnalysisStoreError
            A value goes to a file but the device is not staged.
        """
        values = self._compute()
        now = time.time()
        layouts = self._check(values)
        if self._staged_files is None and any(p.writer is not None for p in layouts.values()):
            written = sorted(key for key, p in layouts.items() if p.writer is not None)
            raise AnalysisStoreError(
                f"AnalysisDevice {self.name!r} writes {written} to files but is not staged; "
                "stage it first (every bluesky plan stages its detectors)"
            )
        self._layouts = layouts
        reading: dict[str, dict[str, Any]] = {}
        for key, layout in layouts.items():
            value = values[key]
            if layout.writer is None:
                reading[key] = {"value": to_json_value(value), "timestamp": now}
                continue
            with self._typed_storage_errors():
                file = self._open.get(key)
                if file is None:
                    file = self._open[key] = self._open_file(layout, value)
            try:
                with self._typed_storage_errors():
                    datum_kwargs = file.writer(value)
            except StorageFullError:
                raise
            except (AnalysisStoreError, TypeError, ValueError) as error:
                raise refused_value(self._where(key), layout.writer, error) from error
            file.written += 1
            if self.asset_form == "resource":
                datum = file.bundle.compose_datum(datum_kwargs=datum_kwargs)
                self._assets.append(("datum", datum))
                reading[key] = {"value": datum["datum_id"], "timestamp": now}
        self._reading = reading
        self._triggers += 1
        status = Status(obj=self)
        status.set_finished()
        return status

    def describe(self) -> dict[str, dict[str, Any]]:
        """The data keys; before the first trigger, ``compute()`` runs once to learn them."""
        if self._layouts is None:
            self._layouts = self._check(self._compute())
        return {key: data_key(layout, self.asset_form) for key, layout in self._layouts.items()}

    def read(self) -> dict[str, dict[str, Any]]:
        """The last trigger's inline values (and datum ids in resource form).

        Keys written to files in stream form are absent, as for ophyd-async detectors: their
        values are reached through the StreamDatum documents.
        """
        if self._reading is None:
            raise AnalysisStoreError(
                f"AnalysisDevice {self.name!r} was read before it was triggered since staging; "
                "its values are computed by trigger() (bluesky's trigger_and_read does both)"
            )
        return dict(self._reading)

    def get_index(self) -> int:
        """How many triggers (frames per file) since staging."""
        return self._triggers

    def collect_asset_docs(self, index: int | None = None) -> Iterator[Asset]:
        """Yield the (stream) resource of each file once, then its datums not yet collected.

        Parameters
        ----------
        index : int, optional
            In stream form, announce frames up to this one (exclusive); default all written.
        """
        while self._assets:
            yield self._assets.popleft()
        if self.asset_form != "stream_resource":
            return
        for file in self._open.values():
            stop = file.written if index is None else min(index, file.written)
            if stop > file.announced:
                yield (
                    "stream_datum",
                    file.bundle.compose_stream_datum(
                        indices=StreamRange(start=file.announced, stop=stop)
                    ),
                )
                file.announced = stop
