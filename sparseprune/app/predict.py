"""``sparseprune predict``: a saved model scores a file in chunks, in bounded memory,
here or on a Dask cluster, and writes its answers atomically.

Input: ``.npy`` (memory-mapped: each chunk is copied out and its pages handed back to
the kernel after use, so the resident memory stays at a chunk's worth, not the file's),
``.npz`` (the array named ``X``, or the only one; streamed out of the archive, compressed
or not) or ``.csv`` (comma-separated numbers, one sample a line; a first line with no
number in it is a header). Any real numeric dtype; rows of ``n_features`` values. A
Fortran-ordered array (``np.save(path, X.T)`` of a feature-major X) spreads each row
over the whole file: memory is bounded for C-ordered arrays only, and a Fortran-ordered
one ends up resident (``.npy``) or is read whole (``.npz``).

Output: ``.npy`` or ``.csv``, what ``model.predict`` gives (class labels: int64 indices,
or the model's ``classes``; or a regressor's values) or with ``proba``
``model.predict_proba``, one row per input row.
It is written to a temporary file beside the output and renamed over it at the end, so
the output appears complete or not at all; on any error the temporary file is removed
and an existing output is left as it was.

Everything that can be checked before reading the data is (the output's directory and
extension, the model file, the input's format, dtype and feature count); a chunk with
NaN or an infinity stops the run with the row named, counted from 0 over the whole input.
"""

import contextlib
import mmap
import os
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .._validation import check_feature_layout, check_finite_rows, check_int
from ..dask import output_layout, predict_chunks
from ..model import load

__all__ = ["BATCH_SIZE", "INPUTS", "OUTPUTS", "Prediction", "check_output", "open_input",
           "run"]

#: Rows per chunk. With a 1024-feature float32 input a chunk is 8 MiB, and a 1024-wide
#: model's activations for it as much again per layer; see the README's measured run.
#: 4,096 rows peaked at 311-316 MB scoring a 256 MiB .npy with the README's model,
#: 2,048 at 267 MB in the same time; on the README's 2 GiB file 2,048 was faster too
#: (56,000 against 37-39,000 rows/s).
BATCH_SIZE = 2048
INPUTS = (".npy", ".npz", ".csv")
OUTPUTS = (".npy", ".csv")


@dataclass(frozen=True)
class Prediction:
    """What a run did: rows scored, the output's path, shape and dtype, seconds taken,
    and where the scoring ran ("local" or the Dask scheduler's address)."""

    rows: int
    out: str
    shape: tuple
    dtype: str
    seconds: float
    where: str


# -- input --------------------------------------------------------------------------------


def _extension(path, allowed, name):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in allowed:
        raise ValueError(f"{name} must end in {' or '.join(allowed)}, got {os.fspath(path)!r}")
    return ext


def _read_npy_header(f, path):
    """(shape, fortran_order, dtype) of the ``.npy`` stream ``f``, left at its data."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable .npy array: {exc}") from exc
    raise ValueError(f"{path}: .npy format version {version} is not supported (1.0, 2.0)")


class _NpyInput:
    """A ``.npy`` file, memory-mapped; chunks are copies, and the pages behind them are
    released (``madvise(MADV_DONTNEED)``) once copied: a mapped page counts in the
    process's resident memory until then, and a 2 GB input would otherwise end up
    resident whole."""

    def __init__(self, path, n_features):
        self.path = path
        with open(path, "rb") as f:
            shape, fortran, dtype = _read_npy_header(f, path)
            check_feature_layout(shape, dtype, n_features, name=path)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
            if size < offset + int(np.prod(shape)) * dtype.itemsize:
                raise ValueError(f"{path}: truncated: its header promises shape {shape} of "
                                 f"{dtype}, the file holds {size - offset} bytes of data")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.n_rows = shape[0]
        self._fortran = fortran
        self._array = np.ndarray(shape, dtype, buffer=self._map, offset=offset,
                                 order="F" if fortran else "C")
        self._offset = offset

    def chunks(self, batch):
        page = mmap.PAGESIZE
        released = 0
        row_bytes = self._array.dtype.itemsize * self._array.shape[1]
        for start in range(0, self.n_rows, batch):
            chunk = np.array(self._array[start : start + batch])
            # A Fortran-ordered file spreads each row over the whole file: nothing to
            # release behind the cursor there.
            end = (self._offset + (start + chunk.shape[0]) * row_bytes) // page * page
            if not self._fortran and end > released and hasattr(self._map, "madvise"):
                self._map.madvise(mmap.MADV_DONTNEED, released, end - released)
                released = end
            yield chunk

    def close(self):
        self._array = None
        if self._map is not None:
            self._map.close()


class _NpzInput:
    """One array of a ``.npz`` archive, read straight from its (possibly compressed)
    member in chunks of rows. A Fortran-ordered member is read whole: its rows are not
    contiguous in the stream."""

    def __init__(self, path, n_features):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            names = [n for n in self._zip.namelist() if n.endswith(".npy")]
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npz archive: {exc}") from exc
        if "X.npy" in names:
            member = "X.npy"
        elif len(names) == 1:
            member = names[0]
        else:
            self._zip.close()
            raise ValueError(f"{path}: holds arrays {[n[:-4] for n in names]}; expected one "
                             "array, or one named 'X'")
        self._name = f"{path}[{member[:-4]}]"
        self._stream = None
        try:
            try:
                self._stream = self._zip.open(member)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise ValueError(f"{self._name}: cannot be read: {exc}") from exc
            shape, self._fortran, self._dtype = _read_npy_header(self._stream, self._name)
            check_feature_layout(shape, self._dtype, n_features, name=self._name)
        except BaseException:
            self.close()
            raise
        self.n_rows, self._n_cols = shape

    def chunks(self, batch):
        if self._fortran:
            whole = self._read(self.n_rows * self._n_cols).reshape(
                (self.n_rows, self._n_cols), order="F")
            for start in range(0, self.n_rows, batch):
                yield np.ascontiguousarray(whole[start : start + batch])
            return
        for start in range(0, self.n_rows, batch):
            rows = min(batch, self.n_rows - start)
            yield self._read(rows * self._n_cols).reshape(rows, self._n_cols)

    def _read(self, count):
        nbytes = count * self._dtype.itemsize
        try:
            data = self._stream.read(nbytes)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{self._name}: cannot be read: {exc}") from exc
        if len(data) != nbytes:
            raise ValueError(f"{self._name}: truncated: the header promises more rows than "
                             "the archive holds")
        return np.frombuffer(data, self._dtype, count)

    def close(self):
        if self._stream is not None:
            self._stream.close()
        self._zip.close()


def _parse_floats(line):
    try:
        return [float(v) for v in line.split(",")]
    except ValueError:
        return None


class _CsvInput:
    """Comma-separated numbers, one sample a line, blank lines skipped; a first line in
    which no field is a number is a header. One pass counts the rows (for the progress
    bar and the ``.npy`` header), the next parses them chunk by chunk."""

    def __init__(self, path, n_features):
        self.path = path
        # utf-8-sig: a byte-order mark (what spreadsheet programs write) is not data.
        self._file = open(path, encoding="utf-8-sig", newline="")
        try:
            first, self.n_rows = None, 0
            try:
                for line in self._file:
                    if line.strip():
                        first = line if first is None else first
                        self.n_rows += 1
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}: not a text file: {exc}") from exc
            if first is None:
                raise ValueError(f"{path}: holds no rows, not even a header")
            fields = first.split(",")
            self._header = all(_parse_floats(v) is None for v in fields)
            self._width = len(fields)
            self.n_rows -= self._header
            check_feature_layout((self.n_rows, self._width), np.float64, n_features,
                                 name=path)
        except BaseException:
            self._file.close()
            raise

    def chunks(self, batch):
        self._file.seek(0)
        lines, numbers = [], []
        skip = self._header
        for number, line in enumerate(self._file, start=1):
            if not line.strip():
                continue
            if skip:
                skip = False
                continue
            lines.append(line)
            numbers.append(number)
            if len(lines) == batch:
                yield self._parse(lines, numbers)
                lines, numbers = [], []
        if lines:
            yield self._parse(lines, numbers)

    def _parse(self, lines, numbers):
        """(len(lines), width) float64. NumPy's parser reads the chunk; where it refuses,
        Python's ``float`` reads it line by line (it takes what the header test takes,
        "1_000" say) and the first line that is not ``width`` numbers gets a ValueError
        with its line number."""
        try:
            block = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
            if block.shape == (len(lines), self._width):
                return block
        except ValueError:
            pass
        rows = []
        for line, number in zip(lines, numbers):
            values = _parse_floats(line)
            if values is None or len(values) != self._width:
                raise ValueError(f"{self.path} line {number}: expected {self._width} "
                                 f"comma-separated numbers, got {line.strip()[:80]!r}")
            rows.append(values)
        return np.array(rows, np.float64)

    def close(self):
        self._file.close()


def open_input(path, n_features):
    """A reader of ``path`` (.npy, .npz or .csv) whose header has been checked against
    ``n_features``: ``.n_rows``, ``.chunks(batch)`` yielding (rows, n_features) arrays,
    ``.close()``. Unreadable or non-numeric files get a ValueError or TypeError."""
    ext = _extension(path, INPUTS, "INPUT")
    if not os.path.isfile(path):
        raise ValueError(f"INPUT {os.fspath(path)!r} does not exist or is not a file")
    reader = {".npy": _NpyInput, ".npz": _NpzInput, ".csv": _CsvInput}[ext]
    return reader(os.fspath(path), n_features)


# -- output -------------------------------------------------------------------------------


def check_output(out):
    """The output's extension (".npy" or ".csv"), after checking that its directory
    exists and that it is not itself a directory."""
    ext = _extension(out, OUTPUTS, "--out")
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise ValueError(f"--out: directory {directory!r} does not exist")
    if os.path.isdir(out):
        raise ValueError(f"--out: {os.fspath(out)!r} is a directory")
    return ext


class _NpyOutput:
    """A ``.npy`` written front to back: the header (the row count is known), then each
    block's bytes; no memory map, so written pages never count as resident."""

    def __init__(self, f, n_rows, tail, dtype):
        self._f, self._tail, self._dtype = f, tail, dtype
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": (n_rows, *tail)}
        np.lib.format.write_array_header_1_0(f, header)

    def write(self, block):
        self._f.write(np.ascontiguousarray(block, self._dtype).data)


class _CsvOutput:
    """One line a sample: its label or its values, comma-separated; floats with the
    digits that read back to the same value (9 for float32, 17 for float64), string
    labels (a model's ``classes``) as they are."""

    def __init__(self, f, n_rows, tail, dtype):
        self._f = f
        if dtype.kind in "US":
            self._fmt = "%s"
        elif dtype.kind in "iub":
            self._fmt = "%d"
        else:
            self._fmt = {4: "%.9g"}.get(dtype.itemsize, "%.17g")

    def write(self, block):
        np.savetxt(self._f, block, fmt=self._fmt, delimiter=",")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic(path):
    """A binary file object that becomes ``path`` when the block ends without error:
    written as a hidden temporary file in ``path``'s directory, renamed over ``path`` at
    the end, removed on any error (Ctrl-C included)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        # mkstemp makes the file private (0600); an output gets the usual mode.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- scoring ------------------------------------------------------------------------------


def _score_here(model, method, chunks, name):
    start = 0
    for chunk in chunks:
        check_finite_rows(chunk, name, start)
        start += chunk.shape[0]
        yield getattr(model, method)(chunk)


@contextlib.contextmanager
def _client(scheduler, workers):
    """A Dask client: of the scheduler at ``scheduler``, or of a new local cluster of
    ``workers`` processes with one thread each (see ``sparseprune.dask``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError("--scheduler and --workers need the dask extra: "
                          "pip install 'sparseprune[dask]'") from exc
    with contextlib.ExitStack() as stack:
        if workers is not None:
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError) as exc:
                raise OSError(f"--scheduler: cannot reach {scheduler!r}: {exc}") from exc
        yield client


def run(model_path, input_path, out, proba=False, batch_size=BATCH_SIZE, scheduler=None,
        workers=None, progress=True):
    """Score the file ``input_path`` with the model saved at ``model_path`` and write
    the answers to ``out`` (.npy or .csv); returns a :class:`Prediction`.

    ``proba``: class probabilities instead of ``predict``'s answers. ``batch_size``: rows
    per chunk (memory is bounded by a chunk's worth). ``scheduler`` (an address such as
    "tcp://10.0.0.5:8786") or ``workers`` (a local cluster of that many processes):
    score the chunks on Dask, the model sent to each worker once; the file is still read
    and written here. Bad input gets a ValueError, TypeError or OSError and nothing is
    written.
    """
    started = time.perf_counter()
    batch_size = check_int(batch_size, "--batch-size", minimum=1)
    if scheduler is not None and workers is not None:
        raise ValueError("give --scheduler or --workers, not both")
    if workers is not None:
        workers = check_int(workers, "--workers", minimum=1)
    out_ext = check_output(out)
    if not os.path.isfile(model_path):
        raise ValueError(f"MODEL {os.fspath(model_path)!r} does not exist or is not a file")
    model = load(model_path)
    method = "predict_proba" if proba else "predict"
    try:
        tail, dtype = output_layout(model, method)
    except (AttributeError, NotImplementedError, TypeError, ValueError) as exc:
        raise ValueError(f"{'--proba' if proba else 'predict'}: {exc}") from exc
    reader = open_input(input_path, model.n_features)
    name = os.fspath(input_path)
    try:
        with contextlib.ExitStack() as stack:
            if scheduler is None and workers is None:
                where = "local"
                results = _score_here(model, method, reader.chunks(batch_size), name)
            else:
                client = stack.enter_context(_client(scheduler, workers))
                where = client.scheduler.address
                # Closed before the client (the stack unwinds in reverse): its cleanup
                # cancels futures, which needs the client still open.
                results = stack.enter_context(contextlib.closing(predict_chunks(
                    client, model, reader.chunks(batch_size), method, name=name)))
            bar = stack.enter_context(tqdm(total=reader.n_rows, unit=" rows", file=sys.stderr,
                                           disable=not progress, desc="predict"))
            f = stack.enter_context(_atomic(out))
            writer = (_NpyOutput if out_ext == ".npy" else _CsvOutput)(
                f, reader.n_rows, tail, dtype)
            rows = 0
            for block in results:
                writer.write(block)
                rows += block.shape[0]
                bar.update(block.shape[0])
            if rows != reader.n_rows:
                raise ValueError(f"{name}: read {rows} rows, expected {reader.n_rows}")
    finally:
        reader.close()
    return Prediction(rows=reader.n_rows, out=os.fspath(out), shape=(reader.n_rows, *tail),
                      dtype=str(dtype), seconds=time.perf_counter() - started, where=where)
