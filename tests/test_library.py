"""Exported model files: atomic export, the versioned sidecar, damaged libraries, re-exported paths.

Loading a damaged library crashed the process (SIGBUS on a truncated file), so loads of
damaged files run in a subprocess: a crash fails the test instead of the test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lutc
from lutc import zoo
from lutc.description import ModelDescription
from lutc.errors import LoadError, LutcError
from lutc.library import SIDECAR_FORMAT, sidecar_of


@pytest.fixture(scope="module")
def models():
    """Two different one-matmul models with the same input signature."""
    return [lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32, seed=s), target="llvm") for s in (1, 2)]


@pytest.fixture
def exported(models, tmp_path):
    return models[0].export_library(tmp_path / "model.so")


X = np.random.default_rng(0).standard_normal((1, 1, 64)).astype(np.float32)


def _load_in_subprocess(path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        import lutc
        try:
            lutc.load({str(path)!r})
        except lutc.errors.LoadError as err:
            print("LoadError:", err)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_sidecar_has_format_and_version(exported):
    data = json.loads(sidecar_of(exported).read_text())
    assert data["format"] == SIDECAR_FORMAT and data["lutc_version"] == lutc.__version__


def test_the_description_survives_export_and_load(models, exported):
    """One serializer: what a build describes is what its sidecar holds and what a load reads back."""
    built = models[0].description
    assert ModelDescription.from_json(built.as_json()) == built
    loaded = lutc.load(exported)
    assert loaded.description == built and loaded.inputs == models[0].inputs and loaded.summary() == models[0].summary()


def test_reexported_path_loads_the_new_model(models, tmp_path):
    path = tmp_path / "r.so"
    models[0].export_library(path)
    first = lutc.load(path)(A=X)
    models[1].export_library(path)
    second = lutc.load(path)(A=X)
    np.testing.assert_array_equal(first, models[0](A=X))
    np.testing.assert_array_equal(second, models[1](A=X))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:100],
        lambda data: b"",
        lambda data: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        lambda data: b"\x7fELF\x02\x01" + b"\x00" * 58,
    ],
    ids=["half", "header-only", "empty", "random", "bare-header"],
)
def test_damaged_library_is_a_load_error(exported, damage):
    exported.write_bytes(damage(exported.read_bytes()))
    done = _load_in_subprocess(exported)
    assert done.returncode == 0, f"crashed ({done.returncode}): {done.stderr[-1500:]}"
    assert done.stdout.startswith("LoadError:") and str(exported) in done.stdout


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object; got a list"),
        (f'{{"format": {SIDECAR_FORMAT}}}', "has no field 'inputs'"),
        ('{"format": 2}', f"sidecar format 2; this lutc reads format {SIDECAR_FORMAT}"),
        ('{"format": 99}', "sidecar format 99"),
        ('{"inputs": []}', "sidecar format None"),
    ],
)
def test_bad_sidecar_names_file_and_field(exported, sidecar, message):
    sidecar_of(exported).write_text(sidecar)
    with pytest.raises(LoadError, match=message) as info:
        lutc.load(exported)
    assert ".lutc.json" in str(info.value)


def test_sidecar_field_of_the_wrong_type(exported):
    data = json.loads(sidecar_of(exported).read_text())
    data["inputs"][0]["shape"] = "1x64"
    sidecar_of(exported).write_text(json.dumps(data))
    with pytest.raises(LoadError, match=r"inputs\[0\] field 'shape' must be a list"):
        lutc.load(exported)


def test_failed_export_keeps_the_previous_files(models, exported, monkeypatch):
    weights = exported.parent / "model.so.weights"
    before = exported.read_bytes(), sidecar_of(exported).read_text(), weights.read_bytes()

    def full_disk(path):
        raise RuntimeError("Compilation error:\n/usr/bin/ld: final link failed: No space left on device")

    monkeypatch.setattr(models[1]._executable, "export_library", full_disk, raising=False)
    with pytest.raises(LutcError, match=r"cannot write .*model\.so: the library did not link"):
        models[1].export_library(exported)
    assert (exported.read_bytes(), sidecar_of(exported).read_text(), weights.read_bytes()) == before
    assert sorted(p.name for p in exported.parent.iterdir()) == ["model.so", "model.so.lutc.json", "model.so.weights"]
    np.testing.assert_array_equal(lutc.load(exported)(A=X), models[0](A=X))


def test_a_sidecar_copied_over_another_library_is_refused(models, tmp_path):
    """Model b's sidecar beside model a's library (same inputs and outputs): a LoadError naming both
    files, not a model that computes a while describing b. b is built in exact mode, so its code
    differs from a's (two fast builds of the same shapes differ only in their weights, which live
    in the weight file: their libraries may be byte-identical, and then the swap is harmless)."""
    other = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32, seed=2), target="llvm", mode="exact")
    a, b = models[0].export_library(tmp_path / "a.so"), other.export_library(tmp_path / "b.so")
    assert a.read_bytes() != b.read_bytes()
    sidecar_of(a).write_bytes(sidecar_of(b).read_bytes())
    with pytest.raises(LoadError, match="different exports") as info:
        lutc.load(a)
    assert str(a) in str(info.value) and str(sidecar_of(a)) in str(info.value)


def test_a_library_changed_after_export_is_refused(exported):
    exported.write_bytes(exported.read_bytes() + b"\0")
    with pytest.raises(LoadError, match=r"is not the library .* describes"):
        lutc.load(exported)


def test_export_without_a_suffix_writes_a_loadable_so(models, tmp_path):
    path = models[0].export_library(tmp_path / "model")
    assert path == tmp_path / "model.so" and sidecar_of(path).is_file() and not (tmp_path / "model").exists()
    np.testing.assert_array_equal(lutc.load(path)(A=X), models[0](A=X))


def test_a_library_renamed_with_its_sidecar_still_loads(exported, models):
    renamed = exported.with_name("renamed.model")
    exported.rename(renamed)
    sidecar_of(exported).rename(sidecar_of(renamed))
    np.testing.assert_array_equal(lutc.load(renamed)(A=X), models[0](A=X))


def test_export_to_a_directory_is_refused(models, tmp_path):
    with pytest.raises(LutcError, match="is a directory"):
        models[0].export_library(tmp_path)


def _weight_file(exported):
    return exported.parent / json.loads(sidecar_of(exported).read_text())["weights"]["file"]


def test_weights_live_in_their_own_file_with_digests(models, exported):
    data = json.loads(sidecar_of(exported).read_text())
    assert data["weights"]["file"] == "model.so.weights" and _weight_file(exported).is_file()
    keys = [t["key"] for t in data["weights"]["tensors"]]
    assert keys == list(models[0].weights) and all(len(t["sha1"]) == 40 for t in data["weights"]["tensors"])
    loaded = lutc.load(exported)
    for key, tensor in models[0].weights.items():
        np.testing.assert_array_equal(loaded.weights[key].numpy(), tensor.numpy())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path, other: path.write_bytes(other.read_bytes()), r"has changed since the library was exported"),
        (lambda path, other: path.write_bytes(path.read_bytes()[:-100]), r"truncated"),
        (lambda path, other: path.write_bytes(b"not a weight file"), r"not a lutc weight file"),
        (lambda path, other: path.unlink(), r"weight file .* is missing"),
    ],
    ids=["swapped", "truncated", "foreign", "missing"],
)
def test_a_wrong_weight_file_is_a_load_error(models, exported, tmp_path, damage, message):
    other = models[1].export_library(tmp_path / "other.so")
    damage(_weight_file(exported), _weight_file(other))
    with pytest.raises(LoadError, match=message) as info:
        lutc.load(exported)
    assert "model.so" in str(info.value)


def test_a_changed_byte_in_the_weight_file_is_a_load_error(exported):
    path = _weight_file(exported)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LoadError, match=r"tensor '.*' has changed since the library was exported"):
        lutc.load(exported)


def test_a_weight_file_already_holding_the_weights_is_reused(models, tmp_path):
    first = models[0].export_library(tmp_path / "a.so")
    shared = tmp_path / "a.so.weights"
    stamp = shared.stat().st_mtime_ns, shared.stat().st_ino
    second = models[0].export_library(tmp_path / "b.so", weights="a.so.weights")
    assert (shared.stat().st_mtime_ns, shared.stat().st_ino) == stamp and not (tmp_path / "b.so.weights").exists()
    np.testing.assert_array_equal(lutc.load(first)(A=X), lutc.load(second)(A=X))


def test_a_weight_file_outside_the_library_folder_is_refused(models, tmp_path):
    with pytest.raises(LutcError, match=r"must name a file beside"):
        models[0].export_library(tmp_path / "a.so", weights=tmp_path / "sub" / "w.weights")
