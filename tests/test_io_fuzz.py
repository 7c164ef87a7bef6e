"""The loader against corrupt and hostile files: every one refused with a ValueError that
says what is wrong, never a crash.

Kernels index memory without bounds checks, so a file that slips through validation can
crash the interpreter. Every load therefore runs in a subprocess (one for all cases, a
fresh one after a crash), which prints a line as it starts each case and one with the
outcome; a case that kills the process is reported as a crash, not as a dead pytest.
A successful load is followed by a prediction through the CSR kernels.
"""

import io
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy_format

import sparseprune as spp

BASE_SIZES = [6, 8, 5, 3]
LAYER_KEYS = ("indptr", "indices", "data", "bias")
HEADER_KEYS = ("format", "version", "dtype", "sizes")
N_FLIPS = 300
N_TRUNCATIONS = 80
MAX_MESSAGE = 2000  # characters: a message is for reading

RUNNER = r"""
import json, sys
import numpy as np
import sparseprune as spp

def outcome(path):
    try:
        model = spp.load(path)
    except BaseException as exc:
        cause = exc.__cause__
        message = str(exc)
        return {"error": type(exc).__name__, "message": message[:5000], "length": len(message),
                "cause": type(cause).__name__ if cause is not None else None}
    if model.n_features > 10**6:
        return {"error": None, "finite": None, "n_features": model.n_features}
    X = np.random.default_rng(0).normal(size=(5, model.n_features))
    finite = []
    for backend in ("sparse", "dense"):
        for layer in model.layers:
            if isinstance(layer, spp.SparseLinear):  # a QuantizedLinear has one backend
                layer.backend = backend
        finite.append(bool(np.isfinite(model.predict_proba(X)).all()))
    return {"error": None, "finite": all(finite), "sizes": list(model.sizes)}

for name, path in json.load(open(sys.argv[1])):
    print(json.dumps({"start": name}), flush=True)
    print(json.dumps({"case": name, **outcome(path)}), flush=True)
"""


def run_loads(cases, directory, timeout=120):
    """{name: outcome} for each (name, path): loaded in a subprocess, a fresh one after
    any case that kills it (that case's outcome is {"error": "CRASH", ...})."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(spp.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    results, remaining = {}, list(cases)
    for attempt in range(len(cases) + 1):
        if not remaining:
            break
        manifest = os.path.join(directory, f"manifest{attempt}.json")
        with open(manifest, "w") as f:
            json.dump(remaining, f)
        try:
            proc = subprocess.run([sys.executable, "-c", RUNNER, manifest], env=env,
                                  capture_output=True, text=True, timeout=timeout)
            stdout, returncode, stderr = proc.stdout, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            returncode, stderr = "timeout", ""
        started = None
        for line in stdout.splitlines():
            record = json.loads(line)
            if "start" in record:
                started = record["start"]
            else:
                results[record.pop("case")] = record
                started = None
        if started is not None:
            results[started] = {"error": "CRASH",
                                "message": f"exit {returncode}: {stderr[-2000:]}"}
        elif returncode != 0:
            raise RuntimeError(f"fuzz runner failed ({returncode}): {stderr[-2000:]}")
        remaining = [c for c in remaining if c[0] not in results]
    return results


# -- building files -----------------------------------------------------------------------


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def npy_claiming_shape(a, shape):
    """A .npy member whose header claims ``shape`` while holding ``a``'s bytes."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": npy_format.dtype_to_descr(a.dtype),
                                            "fortran_order": False, "shape": shape})
    return buf.getvalue() + a.tobytes()


def write_zip(path, members):
    """An .npz: ``members`` {key: bytes of a .npy file}, deflated as numpy does it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key, data in members.items():
            z.writestr(key + ".npy", data)


def base_model():
    """The model every case corrupts: float32 [6, 8, 5, 3], random biases, half pruned."""
    model = spp.MLP(BASE_SIZES, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.bias = rng.normal(size=layer.out_features)
    spp.prune.magnitude(model, 0.5)
    return model.to_sparse(backend="sparse")


# A structural case: (name, mutation, pattern). The mutation gets a copy of the saved
# arrays {key: array} and returns the file's members {key: .npy bytes}, or changes the
# arrays in place and returns None. The pattern must be found in the message.

def layer_pattern(i, part):
    """The message names layer i's array ``part`` (as check_csr or the reader say it)."""
    alias = {"indptr": "(indptr|index pointer)"}.get(part, part)
    if part == "bias":
        return rf"layer{i}_bias|layer {i} bias"
    return rf"layer{i}_{part}|layer {i}\b.*\b{alias}"


def set_key(key, value):
    def mutate(arrays):
        arrays[key] = value(arrays[key]) if callable(value) else value
    return mutate


def drop_key(key):
    def mutate(arrays):
        del arrays[key]
    return mutate


def raw_member(key, data):
    def mutate(arrays):
        members = {k: npy(v) for k, v in arrays.items()}
        members[key] = data
        return members
    return mutate


def claim_shape(key, shape):
    def mutate(arrays):
        members = {k: npy(v) for k, v in arrays.items()}
        members[key] = npy_claiming_shape(arrays[key], shape)
        return members
    return mutate


def non_monotone(ip):
    """Swap two inner entries that differ, keeping indptr[0] == 0 and indptr[-1] == nnz
    (in the dtype the file stores, an unsigned one)."""
    ip = ip.copy()
    inner = np.flatnonzero(np.diff(ip[:-1]) > 0)  # ip[k] < ip[k + 1], k + 1 < n - 1
    k = inner[inner >= 1][-1]
    ip[k], ip[k + 1] = ip[k + 1], ip[k]
    return ip


def overshooting(ip):
    """An inner entry far beyond nnz, in the stored unsigned dtype."""
    ip = ip.copy()
    ip[1] = np.iinfo(ip.dtype).max
    return ip


def first_long_row(arrays, i):
    ip = arrays[f"layer{i}_indptr"]
    row = int(np.flatnonzero(np.diff(ip.astype(np.int64)) >= 2)[0])
    return int(ip[row]), int(ip[row + 1])


def unsorted_row(i):
    def mutate(arrays):
        start, end = first_long_row(arrays, i)
        ind = arrays[f"layer{i}_indices"].copy()
        ind[start:end] = ind[start:end][::-1].copy()
        arrays[f"layer{i}_indices"] = ind
    return mutate


def duplicate_in_row(i):
    def mutate(arrays):
        start, _ = first_long_row(arrays, i)
        ind = arrays[f"layer{i}_indices"].copy()
        ind[start + 1] = ind[start]
        arrays[f"layer{i}_indices"] = ind
    return mutate


def poke(a, value=np.nan):
    """A copy of ``a`` with its middle entry set to ``value``."""
    a = a.copy()
    a[len(a) // 2] = value
    return a


OBJECT = lambda a: np.array(list(a) if a.ndim else [a.item()], dtype=object)  # noqa: E731
STRINGS = lambda a: a.astype(str)  # noqa: E731


def layer_cases(i):
    """Corruptions of layer i's four arrays (layer i: 8 -> 5 for i = 1)."""
    n_in, n_out = BASE_SIZES[i], BASE_SIZES[i + 1]
    k = f"layer{i}_"
    cases = []
    for part in LAYER_KEYS:
        key, pattern = k + part, layer_pattern(i, part)
        cases += [
            (f"{key}-object", set_key(key, OBJECT), pattern),
            (f"{key}-strings", set_key(key, STRINGS), pattern),
            (f"{key}-complex", set_key(key, lambda a: a.astype(complex)), pattern),
            (f"{key}-bool", set_key(key, lambda a: a.astype(bool)), pattern),
            (f"{key}-2d", set_key(key, lambda a: a.reshape(-1, 1)), pattern),
            (f"{key}-0d", set_key(key, lambda a: np.array(a[0] if a.size else 0, a.dtype)),
             pattern),
            (f"{key}-longer", set_key(key, lambda a: np.concatenate([a, a[-1:]])), pattern),
            (f"{key}-shorter", set_key(key, lambda a: a[:-1]), pattern),
            (f"{key}-empty", set_key(key, lambda a: a[:0]), pattern),
            (f"{key}-missing", drop_key(key), rf"missing \[.*'{key}'"),
            (f"{key}-not-npy", raw_member(key, b"not a numpy file at all"), pattern),
            (f"{key}-claims-huge-shape", claim_shape(key, (2**42,)), pattern),
        ]
    def case(part, suffix, value):
        key = k + part
        return (f"{key}-{suffix}", set_key(key, value), layer_pattern(i, part))

    cases += [
        case("data", "int", lambda a: (a * 100).astype(np.int32)),
        case("data", "float64", lambda a: a.astype(np.float64)),
        case("data", "float16", lambda a: a.astype(np.float16)),
        case("data", "nan", poke),
        case("data", "inf", lambda a: poke(a, np.inf)),
        case("data", "-inf", lambda a: poke(a, -np.inf)),
        case("bias", "nan", poke),
        case("bias", "inf", lambda a: poke(a, np.inf)),
        case("bias", "int", lambda a: (a * 100).astype(np.int64)),
        case("bias", "float64", lambda a: a.astype(np.float64)),
        case("indices", "float", lambda a: a.astype(np.float64)),
        case("indices", "negative", lambda a: poke(a.astype(np.int64), -1)),
        case("indices", "equal-n-in", lambda a: poke(a, n_in)),
        case("indices", "huge", lambda a: poke(a.astype(np.uint64), 2**63 + 5)),
        case("indices", "int64-max", lambda a: poke(a.astype(np.int64), 2**63 - 1)),
        (f"{k}indices-unsorted-row", unsorted_row(i), layer_pattern(i, "indices")),
        (f"{k}indices-duplicate-in-row", duplicate_in_row(i), layer_pattern(i, "indices")),
        case("indptr", "float", lambda a: a.astype(np.float64)),
        case("indptr", "non-monotone", non_monotone),
        case("indptr", "non-monotone-int64", lambda a: non_monotone(a.astype(np.int64))),
        case("indptr", "overshoots-nnz", overshooting),
        case("indptr", "first-not-0", lambda a: np.concatenate([[1], a[1:]]).astype(a.dtype)),
        case("indptr", "last-above-nnz", lambda a: np.concatenate([a[:-1], a[-1:] + 1])),
        case("indptr", "last-below-nnz", lambda a: np.concatenate([a[:-1], a[-1:] - 1])),
        case("indptr", "negative", lambda a: poke(a.astype(np.int64), -3)),
        case("indptr", "huge", lambda a: poke(a.astype(np.uint64), 2**40)),
        case("indptr", "length-n-out", lambda a: a[:n_out]),
    ]
    return cases


def header_cases():
    sizes = np.array(BASE_SIZES, np.int64)
    size_pattern = r"'?sizes'?|layer sizes"
    cases = []
    for key in HEADER_KEYS:
        cases += [
            (f"{key}-missing", drop_key(key), rf"missing \[.*'{key}'|{key}"),
            (f"{key}-not-npy", raw_member(key, b"\x00" * 40), key),
            (f"{key}-object", set_key(key, lambda a: np.array([a.tolist()], dtype=object)), key),
            (f"{key}-claims-huge-shape", claim_shape(key, (2**42,)), key),
        ]
    cases += [
        ("format-wrong", set_key("format", np.array("sparseprune2")), "format|not a sparseprune"),
        ("format-empty", set_key("format", np.array("")), "format|not a sparseprune"),
        ("format-bytes", set_key("format", np.array(b"sparseprune")), "format"),
        ("format-array", set_key("format", np.array(["sparseprune"])), "format"),
        ("format-int", set_key("format", np.array(1)), "format"),
        ("version-2", set_key("version", np.array([2])), "version"),
        ("version-0", set_key("version", np.array([0])), "version"),
        ("version-negative", set_key("version", np.array([-1])), "version"),
        ("version-huge", set_key("version", np.array([2**64 - 1], np.uint64)), "version"),
        ("version-float", set_key("version", np.array([1.0])), "version"),
        ("version-bool", set_key("version", np.array([True])), "version"),
        ("version-string", set_key("version", np.array("1")), "version"),
        ("version-two-entries", set_key("version", np.array([1, 1])), "version"),
        ("version-0d", set_key("version", np.array(1)), "version"),
        ("dtype-float16", set_key("dtype", np.array("float16")), "dtype"),
        ("dtype-int32", set_key("dtype", np.array("int32")), "dtype"),
        ("dtype-garbage", set_key("dtype", np.array("<f4; rm -rf /")), "dtype"),
        ("dtype-bytes", set_key("dtype", np.array(b"float32")), "dtype"),
        ("dtype-float64-data-float32", set_key("dtype", np.array("float64")),
         layer_pattern(0, "data")),
        ("sizes-float", set_key("sizes", sizes.astype(float)), size_pattern),
        ("sizes-strings", set_key("sizes", sizes.astype(str)), size_pattern),
        ("sizes-bool", set_key("sizes", sizes.astype(bool)), size_pattern),
        ("sizes-2d", set_key("sizes", sizes.reshape(2, 2)), size_pattern),
        ("sizes-0d", set_key("sizes", np.array(6)), size_pattern),
        ("sizes-empty", set_key("sizes", sizes[:0]), size_pattern),
        ("sizes-one-entry", set_key("sizes", sizes[:1]), size_pattern),
        ("sizes-negative", set_key("sizes", np.array([6, -8, 5, 3])), size_pattern),
        ("sizes-zero", set_key("sizes", np.array([6, 0, 5, 3])), size_pattern),
        ("sizes-one-class", set_key("sizes", np.array([6, 8, 5, 1])), size_pattern),
        ("sizes-huge", set_key("sizes", np.array([6, 2**40, 5, 3])), size_pattern),
        ("sizes-uint64-max", set_key("sizes", np.array([6, 2**64 - 1, 5, 3], np.uint64)),
         size_pattern),
        ("sizes-int32-max", set_key("sizes", np.array([6, 2**31 - 1, 5, 3])),
         rf"{size_pattern}|{layer_pattern(0, 'indptr')}"),
        ("sizes-width-plus-one", set_key("sizes", np.array([6, 9, 5, 3])),
         rf"{size_pattern}|{layer_pattern(0, 'indptr')}"),
        ("sizes-classes-plus-one", set_key("sizes", np.array([6, 8, 5, 4])),
         rf"{size_pattern}|{layer_pattern(2, 'indptr')}"),
        ("sizes-inputs-minus-three", set_key("sizes", np.array([3, 8, 5, 3])),
         rf"{size_pattern}|{layer_pattern(0, 'indices')}"),
        ("sizes-extra-layer", set_key("sizes", np.array([6, 8, 5, 3, 2])),
         r"missing \[.*'layer3_"),
        ("sizes-one-layer-less", set_key("sizes", np.array([6, 8, 5])),
         r"unexpected \[.*'layer2_"),
        ("sizes-100000-layers", set_key("sizes", np.full(100_000, 5)), r"missing|sizes"),
    ]
    return cases


def key_cases():
    return [
        ("extra-key", lambda a: a.update(extra=np.zeros(3)), r"unexpected \['extra'\]"),
        ("extra-layer-arrays", lambda a: a.update(layer3_data=np.zeros(3, np.float32)),
         r"unexpected \['layer3_data'\]"),
        ("extra-member-not-npy", lambda a: {**{k: npy(v) for k, v in a.items()},
                                            "notes.txt": b"hello"}, r"unexpected"),
        ("no-members", lambda a: {}, r"missing|format"),
    ]


STRUCTURAL = header_cases() + key_cases() + layer_cases(1) + [
    c for c in layer_cases(0) + layer_cases(2)
    if c[0].split("-", 1)[1] in ("non-monotone", "overshoots-nnz", "unsorted-row", "nan",
                                 "equal-n-in", "missing", "last-above-nnz")
]


# -- byte-level corruption ----------------------------------------------------------------


def central_directory(raw):
    """Offsets of the zip's central directory entries."""
    offsets, start = [], 0
    while (start := raw.find(b"PK\x01\x02", start)) != -1:
        offsets.append(start)
        start += 4
    return offsets


def patched(raw, offset, fmt, value):
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def byte_cases(raw):
    """(name, bytes, pattern or None): files that are broken as files."""
    cd = central_directory(raw)
    member = cd[len(cd) // 2]
    rng = np.random.default_rng(2024)
    cases = [
        ("empty-file", b"", None),
        ("random-bytes-100", rng.bytes(100), None),
        ("random-bytes-5000", rng.bytes(5000), None),
        ("zip-magic-then-random", b"PK\x03\x04" + rng.bytes(3000), None),
        ("npy-magic-then-random", b"\x93NUMPY\x01\x00" + rng.bytes(3000), None),
        ("pickle-file", b"\x80\x04\x95" + rng.bytes(200), None),
        ("a-plain-npy", npy(np.arange(5.0)), r"not an \.npz"),
        # The central directory's uncompressed size (offset 24) of a member.
        ("zip-bomb-claim", patched(raw, member + 24, "<I", 2**32 - 1), "impossible size"),
        ("zip-bomb-claim-first", patched(raw, cd[0] + 24, "<I", 2**31), "impossible size"),
        # Flags (offset 8), version needed (6), method (10), CRC (16) of a member.
        ("member-marked-encrypted", patched(raw, member + 8, "<H", 1), None),
        ("first-member-marked-encrypted", patched(raw, cd[0] + 8, "<H", 1), None),
        ("member-needs-zip-version-6.4", patched(raw, member + 6, "<H", 64), None),
        ("member-unknown-compression", patched(raw, member + 10, "<H", 99), None),
        ("member-bzip2-compression", patched(raw, member + 10, "<H", 12), None),
        ("member-lzma-compression", patched(raw, member + 10, "<H", 14), None),
        ("member-stored-compression", patched(raw, member + 10, "<H", 0), None),
        ("member-bad-crc", patched(raw, member + 16, "<I", 0), None),
    ]
    step = max(1, len(raw) // N_TRUNCATIONS)
    cases += [(f"truncated-at-{n}", raw[:n], None) for n in range(1, len(raw), step)]
    cases += [(f"truncated-at-{len(raw) - 1}", raw[:-1], None)]
    return cases


def flip_cases(raw):
    rng = np.random.default_rng(12345)
    cases = []
    for k in range(N_FLIPS):
        out = bytearray(raw)
        for _ in range(1 + (k % 3 == 0)):  # one byte, every third case two
            out[rng.integers(len(out))] ^= int(rng.integers(1, 256))
        cases.append((f"flip-{k}", bytes(out)))
    return cases


# -- running everything once ----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """Writes every case's file, loads them all, returns (results, expectations)."""
    directory = tmp_path_factory.mktemp("fuzz")
    smodel = base_model()
    base_path = directory / "base.npz"
    smodel.save(base_path)
    raw = base_path.read_bytes()
    with np.load(base_path) as npz:
        base = {k: npz[k] for k in npz.files}

    cases, expected = [("base", str(base_path))], {"base": ("ok", None)}
    for name, mutate, pattern in STRUCTURAL:
        arrays = {k: v.copy() for k, v in base.items()}
        members = mutate(arrays)
        if members is None:
            members = {k: npy(v) for k, v in arrays.items()}
        path = directory / f"case{len(cases)}.npz"  # the message names the path: no hints
        write_zip(path, members)
        cases.append((name, str(path)))
        expected[name] = ("structural", pattern)
    for name, data, pattern in byte_cases(raw):
        path = directory / f"case{len(cases)}.npz"
        path.write_bytes(data)
        cases.append((name, str(path)))
        expected[name] = ("bytes", pattern)
    for name, data in flip_cases(raw):
        path = directory / f"case{len(cases)}.npz"
        path.write_bytes(data)
        cases.append((name, str(path)))
        expected[name] = ("flip", None)
    (directory / "a-directory.npz").mkdir()
    cases.append(("a-directory", str(directory / "a-directory.npz")))
    expected["a-directory"] = ("bytes", "Is a directory")
    cases.append(("missing-file", str(directory / "no-such-file.npz")))
    expected["missing-file"] = ("missing", None)
    return run_loads(cases, str(directory)), expected, smodel


def describe(name, result):
    return f"{name}: {result.get('error')}: {result.get('message', result)!s:.300}"


def check_refused(name, result, pattern):
    """None if ``result`` is a refusal as documented, else what is wrong with it."""
    if result["error"] is None:
        return f"{name}: loaded without error (finite predictions: {result.get('finite')})"
    if result["error"] != "ValueError":
        return describe(name, result)
    message = result["message"]
    if pattern is not None and not re.search(pattern, message):
        return f"{name}: message does not name the problem ({pattern!r}): {message[:300]}"
    if result["length"] > MAX_MESSAGE:
        return f"{name}: a message of {result['length']} characters: {message[:200]}..."
    return None


def test_the_base_file_loads(fuzz):
    results, _, smodel = fuzz
    assert results["base"] == {"error": None, "finite": True, "sizes": BASE_SIZES}


@pytest.mark.parametrize("name", [c[0] for c in STRUCTURAL])
def test_structural_corruption_is_refused(fuzz, name):
    results, expected, _ = fuzz
    _, pattern = expected[name]
    problem = check_refused(name, results[name], pattern)
    assert problem is None, problem


def refused_or_harmless(results, names, sizes=None):
    """(problems, refusals) over the fuzz cases ``names``: each must be refused as
    documented, or load a model that predicts finite values (of layer ``sizes`` if
    given)."""
    problems = []
    for name in names:
        result = results[name]
        if result["error"] is None:
            wrong_sizes = sizes is not None and result["sizes"] != sizes
            if result["finite"] is not True or wrong_sizes:
                shown = "" if sizes is None else f", sizes {result.get('sizes')}"
                problems.append(f"{name}: loaded, predictions finite: {result['finite']}{shown}")
        else:
            problem = check_refused(name, result, None)
            if problem:
                problems.append(problem)
    return problems, sum(results[n]["error"] == "ValueError" for n in names)


def test_byte_level_corruption_is_refused(fuzz):
    results, expected, _ = fuzz
    problems = [check_refused(name, results[name], pattern)
                for name, (kind, pattern) in expected.items() if kind == "bytes"]
    problems = [p for p in problems if p]
    assert not problems, f"{len(problems)} cases:\n" + "\n".join(problems)


def test_random_byte_flips_are_refused_or_harmless(fuzz):
    """A flip either breaks the file (ValueError) or hits bytes nothing depends on (a
    timestamp, an unused field); then the model loads and predicts finite values."""
    results, expected, _ = fuzz
    names = [n for n, (kind, _) in expected.items() if kind == "flip"]
    problems, refused = refused_or_harmless(results, names, BASE_SIZES)
    assert not problems, f"{len(problems)} of {len(names)} flips:\n" + "\n".join(problems)
    assert refused > len(names) // 2  # the fuzz does hit the file's contents


def test_a_missing_file(fuzz):
    """Decided: a ValueError like every unreadable file, naming the path, chained from
    the FileNotFoundError (so ``raise ... from`` keeps the errno for those who need it)."""
    results, _, _ = fuzz
    result = results["missing-file"]
    assert result["error"] == "ValueError", describe("missing-file", result)
    assert "no-such-file.npz" in result["message"]
    assert "No such file or directory" in result["message"]
    assert result["cause"] == "FileNotFoundError"


# == format version 2 (compact files) ======================================================
#
# A v2 file ends in a CRC32 of its body, so a flipped or truncated file is refused at the
# checksum. To reach the parser behind it, every structural case below is rebuilt by this
# test's own reading of the documented layout (``sparseprune/compact.py``) and sealed
# with a valid checksum; so are the "resealed" random flips.

V2_BITS = 3


def v2_varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


class Cursor:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def u8(self):
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self):
        value = shift = 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def take(self, n):
        self.pos += n
        return self.data[self.pos - n : self.pos]


def v2_fields(raw):
    """The body of a v2 file as an ordered list of [name, kind, value] (kind u8, varint,
    f32 or bytes), read by the documented layout."""
    cur = Cursor(raw[9:])
    fields = []

    def add(name, kind, n=None):
        value = {"u8": cur.u8, "varint": cur.varint, "f32": lambda: struct.unpack(
            "<f", cur.take(4))[0], "bytes": lambda: cur.take(n)}[kind]()
        fields.append([name, kind, value])
        return value

    add("dtype", "u8")
    n_sizes = add("n_sizes", "varint")
    for i in range(n_sizes):
        add(f"size{i}", "varint")
    for key in ("activation", "loss"):
        add(key, "bytes", add(f"{key}_len", "varint"))
    if add("classes_type", "bytes", add("classes_type_len", "varint")):
        dtype = np.dtype(fields[-1][2].decode())
        add("classes", "bytes", add("classes_count", "varint") * dtype.itemsize)
    for i in range(n_sizes - 1):
        bits = add(f"L{i}.bits", "u8")
        add(f"L{i}.nnz", "varint")
        if bits:
            add(f"L{i}.offset", "f32")
            add(f"L{i}.step", "f32")
        for key in ("complement", "m", "unary"):
            add(f"L{i}.{key}", "u8" if key == "complement" else "varint")
        add(f"L{i}.mask", "bytes", add(f"L{i}.mask_len", "varint"))
        add(f"L{i}.method", "u8")
        add(f"L{i}.count", "varint")
        add(f"L{i}.values", "bytes", add(f"L{i}.values_len", "varint"))
    assert cur.pos == len(raw) - 9
    return fields


def v2_bytes(fields, version=2, crc=None):
    """A v2 file from ``fields``, sealed with its checksum (or ``crc``)."""
    out = {"u8": lambda v: bytes([v]), "varint": v2_varint,
           "f32": lambda v: struct.pack("<f", v), "bytes": bytes}
    body = b"".join(out[kind](value) for _, kind, value in fields)
    crc = zlib.crc32(body) if crc is None else crc
    return b"\x93SPP" + bytes([version]) + struct.pack("<I", crc) + body


def v2_set(fields, name, value):
    """Set field ``name``; a bytes field's length field follows it."""
    fields = [list(f) for f in fields]
    for field in fields:
        if field[0] == name:
            field[2] = value(field[2]) if callable(value) else value
            if field[1] == "bytes":
                for other in fields:
                    if other[0] == f"{name}_len":
                        other[2] = len(field[2])
            return fields
    raise KeyError(name)


def v2_delete(fields, name):
    return [f for f in fields if f[0] != name]


def v2_insert_after(fields, name, new):
    i = [f[0] for f in fields].index(name) + 1
    return fields[:i] + [new] + fields[i:]


def v2_base_model():
    return base_model().quantize(V2_BITS)


def v2_values(method, codes):
    """A layer's values stream stored by ``method`` (codes one per byte for zlib/lzma)."""
    raw = bytes(codes)
    if method == 0:
        bits = np.unpackbits(np.array(codes, np.uint8)[:, None], axis=1, count=V2_BITS,
                             bitorder="little")
        return np.packbits(bits.ravel(), bitorder="little").tobytes()
    if method == 1:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(raw) + c.flush()
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[
        {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 22, "lc": 0, "lp": 0, "pb": 0}])


def v2_layer_codes(model, i):
    layer = model.layers[i]
    return list(layer.codes) + list(layer.bias_codes)


def v2_stream_case(i, method, codes):
    """Layer i's values replaced by ``codes`` stored by ``method``."""
    def mutate(fields, model):
        fields = v2_set(fields, f"L{i}.method", method)
        return v2_set(fields, f"L{i}.values", v2_values(method, codes(v2_layer_codes(model, i))))
    return mutate


def v2_cases():
    """(name, mutate(fields, model) -> fields or bytes, pattern)."""
    L = "layer 1"

    def field(name, value):
        return lambda fields, model: v2_set(fields, name, value)

    def raw(transform):
        return lambda fields, model: transform(v2_bytes(fields))

    cases = [
        ("v2-version-3", lambda f, m: v2_bytes(f, version=3), "format version 3"),
        ("v2-version-1", lambda f, m: v2_bytes(f, version=1), "format version 1"),
        ("v2-bad-checksum", lambda f, m: v2_bytes(f, crc=1234), "checksum"),
        ("v2-header-only", raw(lambda b: b[:9]), "checksum"),
        ("v2-magic-only", raw(lambda b: b[:4]), r"not a sparseprune compact file|checksum"),
        ("v2-dtype-2", field("dtype", 2), "dtype"),
        ("v2-dtype-16", field("dtype", 16), "dtype"),
        ("v2-one-size", lambda f, m: v2_delete(v2_delete(v2_set(f, "n_sizes", 1), "size1"),
                                               "size2")[:2] + [["size0", "varint", 6]],
         "sizes"),
        ("v2-size-zero", field("size1", 0), "sizes"),
        ("v2-size-huge", field("size1", 2**40), "sizes|limit"),
        ("v2-size-plus-one", field("size1", 9), "layer 0|layer 1|mask|values"),
        ("v2-inputs-minus-three", field("size0", 3), "layer 0: (mask|values)"),
        ("v2-classes-plus-one", field("size3", 4), "layer 2"),
        # A count that shifts everything after it: refused wherever the reading breaks.
        ("v2-more-sizes-than-layers", field("n_sizes", 5), "activation|needs|remain"),
        ("v2-fewer-sizes", lambda f, m: v2_delete(v2_set(f, "n_sizes", 3), "size3"),
         "layer|bytes after|limit"),
        ("v2-activation-unknown", field("activation", b"swish"), "activation"),
        ("v2-activation-not-ascii", field("activation", "rélu".encode()), "ASCII"),
        ("v2-activation-too-long", field("activation", b"r" * 100), "activation"),
        ("v2-loss-unknown", field("loss", b"hinge"), "loss"),
        ("v2-classes-object", lambda f, m: v2_insert_after(v2_insert_after(v2_set(
            f, "classes_type", b"|O"), "classes_type", ["classes_count", "varint", 3]),
            "classes_count", ["classes", "bytes", b"\x00" * 24]), "classes"),
        ("v2-classes-complex", lambda f, m: v2_insert_after(v2_insert_after(v2_set(
            f, "classes_type", b"<c16"), "classes_type", ["classes_count", "varint", 3]),
            "classes_count", ["classes", "bytes", b"\x00" * 48]), "classes"),
        ("v2-classes-two-for-three-outputs", lambda f, m: v2_insert_after(v2_insert_after(
            v2_set(f, "classes_type", b"<i8"), "classes_type", ["classes_count", "varint", 2]),
            "classes_count", ["classes", "bytes", b"\x00" * 16]), "classes"),
        ("v2-classes-short", lambda f, m: v2_insert_after(v2_insert_after(
            v2_set(f, "classes_type", b"<i8"), "classes_type", ["classes_count", "varint", 3]),
            "classes_count", ["classes", "bytes", b"\x00" * 20]), "layer 0|classes|remain"),
        ("v2-classes-duplicate", lambda f, m: v2_insert_after(v2_insert_after(
            v2_set(f, "classes_type", b"<i8"), "classes_type", ["classes_count", "varint", 3]),
            "classes_count", ["classes", "bytes", b"\x00" * 24]), "distinct"),
        ("v2-trailing-byte", lambda f, m: f + [["extra", "u8", 0]], "after the last layer"),
        ("v2-one-layer-missing", lambda f, m: [x for x in f if not x[0].startswith("L2.")],
         "layer 2|remain"),
        ("v2-bits-1", field("L1.bits", 1), f"{L}: bits"),
        ("v2-bits-9", field("L1.bits", 9), f"{L}: bits"),
        ("v2-bits-255", field("L1.bits", 255), f"{L}: bits"),
        ("v2-bits-0-reads-offset-as-mask", field("L1.bits", 0), f"{L}"),
        ("v2-bits-8-for-3-bit-codes", field("L1.bits", 8), f"{L}: values"),
        ("v2-bits-2-for-3-bit-codes", field("L1.bits", 2), f"{L}: values"),
        ("v2-nnz-plus-one", field("L1.nnz", lambda v: v + 1), f"{L}: .*(disagree|values)"),
        ("v2-nnz-minus-one", field("L1.nnz", lambda v: v - 1), f"{L}: .*(disagree|values)"),
        ("v2-nnz-zero", field("L1.nnz", 0), f"{L}: (mask|values)"),
        ("v2-nnz-above-n", field("L1.nnz", 41), f"{L}: nnz.*limit"),
        ("v2-nnz-huge", field("L1.nnz", 2**62), f"{L}: nnz.*limit"),
        ("v2-offset-nan", field("L1.offset", float("nan")), f"{L}: .*offset"),
        ("v2-offset-inf", field("L1.offset", float("inf")), f"{L}: .*offset"),
        ("v2-step-nan", field("L1.step", float("nan")), f"{L}: .*step"),
        ("v2-step-negative", field("L1.step", -0.5), f"{L}: .*step"),
        ("v2-step-overflows", field("L1.step", 3e38), f"{L}: .*(beyond|range)"),
        ("v2-complement-2", field("L1.complement", 2), f"{L}: mask complement"),
        ("v2-complement-flipped", field("L1.complement", lambda v: 1 - v), f"{L}: mask"),
        ("v2-m-zero", field("L1.m", 0), f"{L}: mask"),
        ("v2-m-huge", field("L1.m", 2**50), f"{L}: mask"),
        ("v2-m-plus-one", field("L1.m", lambda v: v + 1), f"{L}: mask"),
        ("v2-unary-plus-one", field("L1.unary", lambda v: v + 1), f"{L}: mask.*disagree"),
        ("v2-unary-minus-one", field("L1.unary", lambda v: v - 1), f"{L}: mask.*disagree"),
        ("v2-mask-truncated", field("L1.mask", lambda v: v[:-1]), f"{L}: mask"),
        ("v2-mask-extra-byte", field("L1.mask", lambda v: v + b"\x00"), f"{L}: mask"),
        ("v2-mask-empty", field("L1.mask", b""), f"{L}: mask"),
        ("v2-mask-ones", field("L1.mask", lambda v: b"\xff" * len(v)), f"{L}: mask"),
        ("v2-mask-zeros", field("L1.mask", lambda v: b"\x00" * len(v)), f"{L}: mask"),
        ("v2-mask-length-beyond-file", field("L1.mask_len", 10**6), f"{L}: mask.*remain"),
        ("v2-method-3", field("L1.method", 3), f"{L}: values.*method"),
        ("v2-count-plus-one", field("L1.count", lambda v: v + 1), f"{L}: values.*expected"),
        ("v2-count-minus-one", field("L1.count", lambda v: v - 1), f"{L}: values.*expected"),
        ("v2-values-truncated", field("L1.values", lambda v: v[:-1]), f"{L}: values"),
        ("v2-values-extra-byte", field("L1.values", lambda v: v + b"\x00"), f"{L}: values"),
        ("v2-values-nonzero-padding", field("L1.values", lambda v: v[:-1] + bytes(
            [v[-1] | 0x80])), f"{L}: values.*padding"),
        ("v2-values-length-beyond-file", field("L1.values_len", 10**6), f"{L}: values"),
        ("v2-values-raw-called-zlib", field("L1.method", 1), f"{L}: values"),
        ("v2-values-raw-called-lzma", field("L1.method", 2), f"{L}: values"),
        ("v2-values-zlib-ok", v2_stream_case(1, 1, lambda c: c), None),
        ("v2-values-lzma-ok", v2_stream_case(1, 2, lambda c: c), None),
        ("v2-values-zlib-one-short", v2_stream_case(1, 1, lambda c: c[:-1]), f"{L}: values"),
        ("v2-values-lzma-one-long", v2_stream_case(1, 2, lambda c: c + [0]), f"{L}: values"),
        ("v2-values-zlib-code-past-bits", v2_stream_case(1, 1, lambda c: c[:-1] + [8]),
         f"{L}: values.*code above 7"),
        ("v2-values-lzma-code-255", v2_stream_case(1, 2, lambda c: [255] + c[1:]),
         f"{L}: values.*code above 7"),
        ("v2-values-zlib-garbage", lambda f, m: v2_set(v2_set(f, "L1.method", 1),
                                                       "L1.values", b"\xff" * 30),
         f"{L}: values"),
        # Ten million outputs claimed, their biases in a 2-byte deflate stream: refused
        # before anything is inflated or allocated.
        ("v2-values-zlib-bomb-claim", lambda f, m: v2_set(v2_set(v2_set(v2_set(
            f, "size3", 10**7), "L2.count", lambda c: c - 3 + 10**7), "L2.method", 1),
            "L2.values", b"\x03\x00"), "layer 2: values: 2 zlib bytes cannot hold"),
    ]
    return cases


def v2_float_cases():
    """Corruptions of a float model's v2 file (values raw: little-endian floats)."""
    L = "layer 0"

    def values(transform):
        def mutate(fields, model):
            fields = v2_set(fields, "L0.method", 0)
            layer = model.layers[0]
            v = np.concatenate([layer.data, layer.bias]).astype("<f4")
            return v2_set(fields, "L0.values", transform(v).tobytes())
        return mutate

    return [
        ("v2f-values-raw-ok", values(lambda v: v), None),
        ("v2f-data-nan", values(lambda v: poke(v)), f"{L}: data"),
        ("v2f-data-inf", values(lambda v: poke(v, np.inf)), f"{L}: data"),
        ("v2f-bias-nan", values(lambda v: np.concatenate([v[:-1], [np.nan]]).astype("<f4")),
         f"{L} bias"),
        ("v2f-values-short", values(lambda v: v[:-1]), f"{L}: values"),
        ("v2f-values-float64", values(lambda v: v.astype("<f8")), f"{L}: values"),
        ("v2f-offset-for-float-layer", lambda f, m: v2_insert_after(
            f, "L0.nnz", ["L0.offset", "f32", 1.0]), f"{L}"),
    ]


V2_STRUCTURAL = v2_cases()
V2_FLOAT = v2_float_cases()
N_V2_FLIPS = 200


@pytest.fixture(scope="module")
def fuzz_v2(tmp_path_factory):
    """Writes every v2 case's file, loads them all: (results, expectations, raw)."""
    directory = tmp_path_factory.mktemp("fuzz_v2")
    served = v2_base_model()
    float_model = base_model()
    raw, raw_float = (directory / "base.spp"), (directory / "base-float.spp")
    served.save(raw)
    float_model.save(raw_float, version=2)
    raw, raw_float = raw.read_bytes(), raw_float.read_bytes()
    fields, fields_float = v2_fields(raw), v2_fields(raw_float)
    assert v2_bytes(fields) == raw and v2_bytes(fields_float) == raw_float
    cases, expected = [], {}

    def add(name, data, kind, pattern):
        path = directory / f"case{len(cases)}.spp"
        path.write_bytes(data)
        cases.append((name, str(path)))
        expected[name] = (kind, pattern)

    add("v2-base", raw, "ok", None)
    add("v2f-base", raw_float, "ok", None)
    for table, base, model in ((V2_STRUCTURAL, fields, served),
                               (V2_FLOAT, fields_float, float_model)):
        for name, mutate, pattern in table:
            result = mutate([list(f) for f in base], model)
            data = result if isinstance(result, bytes) else v2_bytes(result)
            add(name, data, "ok" if pattern is None else "structural", pattern)
    step = max(1, len(raw) // N_TRUNCATIONS)
    for n in list(range(0, len(raw), step)) + [len(raw) - 1]:
        add(f"v2-truncated-at-{n}", raw[:n], "bytes", None)
    rng = np.random.default_rng(77)
    for k in range(N_V2_FLIPS):
        for resealed in (False, True):
            body = bytearray(raw[9:])
            for _ in range(1 + (k % 3 == 0)):
                body[rng.integers(len(body))] ^= int(rng.integers(1, 256))
            data = raw[:5] + (struct.pack("<I", zlib.crc32(body)) if resealed else raw[5:9])
            add(f"v2-{'resealed-' if resealed else ''}flip-{k}", data + bytes(body),
                "resealed" if resealed else "bytes", None if resealed else "checksum")
    return run_loads(cases, str(directory)), expected


def test_v2_base_files_load(fuzz_v2):
    results, _ = fuzz_v2
    for name in ("v2-base", "v2f-base"):
        assert results[name] == {"error": None, "finite": True, "sizes": BASE_SIZES}, name


@pytest.mark.parametrize("name", [c[0] for c in V2_STRUCTURAL + V2_FLOAT])
def test_v2_structural_corruption_is_refused(fuzz_v2, name):
    """Each crafted file, checksum valid, is refused with a message that names the
    problem; the few well-formed variants (the same values stored another way) load."""
    results, expected = fuzz_v2
    kind, pattern = expected[name]
    if kind == "ok":
        assert results[name] == {"error": None, "finite": True, "sizes": BASE_SIZES}
        return
    problem = check_refused(name, results[name], pattern)
    assert problem is None, problem


def test_v2_truncations_and_flips_are_refused(fuzz_v2):
    results, expected = fuzz_v2
    problems = [check_refused(name, results[name], pattern)
                for name, (kind, pattern) in expected.items() if kind == "bytes"]
    problems = [p for p in problems if p]
    assert not problems, f"{len(problems)} cases:\n" + "\n".join(problems)


def test_v2_resealed_flips_are_refused_or_harmless(fuzz_v2):
    """Flips behind a recomputed checksum reach the parser: each is refused with a
    ValueError or decodes to a well-formed model that predicts finite values (a flipped
    code is another weight); never a crash."""
    results, expected = fuzz_v2
    names = [n for n, (kind, _) in expected.items() if kind == "resealed"]
    problems, refused = refused_or_harmless(results, names)
    assert not problems, f"{len(problems)} of {len(names)} flips:\n" + "\n".join(problems)
    assert refused > len(names) // 3
