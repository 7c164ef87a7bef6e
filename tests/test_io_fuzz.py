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
import os
import re
import struct
import subprocess
import sys
import zipfile

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
    problems = []
    for name in names:
        result = results[name]
        if result["error"] is None:
            if result["finite"] is not True or result["sizes"] != BASE_SIZES:
                problems.append(f"{name}: loaded, predictions finite: {result['finite']}, "
                                f"sizes {result.get('sizes')}")
        else:
            problem = check_refused(name, result, None)
            if problem:
                problems.append(problem)
    refused = sum(results[n]["error"] == "ValueError" for n in names)
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
