"""Smoke tests of ``python -m lutc.bench kernels --quick``: outputs exist, checks pass, numbers are sane.

Nothing here asserts a speed: the machines are noisy and the run is tiny (M=1, K=N=256).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lutc.bench import main
from lutc.bench.cases import cold_copies, parse_shape
from lutc.bench.libs import BASELINES

QUICK = ["kernels", "--quick", "--plain", "--repeat", "2", "--min-time", "0.01", "--no-floors"]


def _run(out: Path, *flags: str) -> dict:
    assert main([*QUICK, "--out", str(out), *flags]) == 0
    for name in ("kernels.json", "kernels.md", "kernels.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "kernels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "kernels.json").read_text())


def _assert_all_ran(report: dict, libraries: list[str]) -> None:
    """Every library ran every mode of the one case, passed its check, and has positive numbers."""
    (case,) = report["cases"]
    rows = {(m["library"], m["mode"]): m for m in case["measurements"]}
    assert set(rows) == {(lib, mode) for lib in libraries for mode in ("hot", "cold")}
    for (lib, mode), m in rows.items():
        assert m["status"] == "ok", (lib, mode, m["note"])
        assert m["check_passed"] and m["check"]["rel_err"] <= m["check"]["tolerance"], (lib, mode)
        assert 0 < m["timing"]["min_us"] <= m["timing"]["median_us"], (lib, mode)
        assert m["weight_bytes"] > 0 and m["gbps"] > 0, (lib, mode)
        assert m["copies"] == 1 if mode == "hot" else m["copies"] > 1, (lib, mode, m["copies"])
    assert all(b["best_gbps"] > 0 and b["median_gbps"] > 0 for b in report["roofline"]["bandwidth"])
    assert {b["kind"] for b in report["roofline"]["bandwidth"]} == {"hot", "cold"}


@pytest.mark.slow
def test_quick_baselines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = _run(tmp_path, "--lutc-modes")
    _assert_all_ran(report, list(BASELINES))
    lut = [m for m in report["cases"][0]["measurements"] if m["library"] == "ort-nbits-lut"]
    assert all("LUT GEMM in effect" in m["note"] for m in lut)
    printed = capsys.readouterr().out
    assert "| M=1 K=256 N=256 w2g32 t1 | hot |" in printed and "TVM default" in printed
    assert report["machine"]["versions"]["onnxruntime"] != "not installed"


@pytest.mark.slow
def test_quick_lutc(tmp_path: Path) -> None:
    pytest.importorskip("lutc.kernels")
    report = _run(tmp_path, "--baselines", "ort-nbits-acc4")
    _assert_all_ran(report, ["lutc-fast", "lutc-exact", "ort-nbits-acc4"])
    derived = report["cases"][0]["derived"]
    for mode in ("hot", "cold"):
        assert derived[mode]["speedup_fast_vs_ort_best"] > 0
        assert derived[mode]["roofline_fraction"]["lutc-fast"] > 0


def test_cli_rejects_block_not_dividing_k(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["kernels", "--shapes", "96x64", "--blocks", "64"])
    assert info.value.code == 2
    assert "(96, 64)" in capsys.readouterr().err


def test_parse_shape_and_cold_copies() -> None:
    assert parse_shape("4096x11008") == (4096, 11008)
    with pytest.raises(ValueError, match="not KxN"):
        parse_shape("4096")
    # 4 MiB weights: 16 copies make 64 MiB, one more makes the working set exceed it.
    assert cold_copies(4 << 20, 64 << 20) == 17
    assert cold_copies(4 << 20, 0) == 1


@pytest.mark.slow
def test_quick_lutc_any_m(tmp_path: Path) -> None:
    """``--any-m`` adds the kernel built for any row count (what a prompt runs), timed at the case's
    M (3 here, a row count no static kernel of the run has) and checked like the others."""
    pytest.importorskip("lutc.kernels")
    report = _run(tmp_path, "--any-m", "--m", "3", "--baselines", "ort-nbits-acc4", "--lutc-modes", "fast")
    _assert_all_ran(report, ["lutc-fast", "lutc-fast-any-m", "ort-nbits-acc4"])
    derived = report["cases"][0]["derived"]
    for mode in ("hot", "cold"):
        assert derived[mode]["speedup_any_m_vs_ort_best"] > 0
        assert derived[mode]["roofline_fraction"]["lutc-fast-any-m"] > 0
    assert "lutc fast any-M vs ORT best" in (tmp_path / "kernels.md").read_text()


def test_quick_lutc_half_scales(tmp_path: Path) -> None:
    """``--half-scales`` adds lutc fast with float16 scales and offsets, with its own (fewer) bytes."""
    pytest.importorskip("lutc.kernels")
    report = _run(tmp_path, "--half-scales", "--baselines", "ort-nbits-acc4", "--lutc-modes", "fast")
    _assert_all_ran(report, ["lutc-fast", "lutc-fast-half-scales", "ort-nbits-acc4"])
    (case,) = report["cases"]
    nbytes = {m["library"]: m["weight_bytes"] for m in case["measurements"]}
    assert nbytes["lutc-fast-half-scales"] < nbytes["lutc-fast"] == case["lutc_weight_bytes"]
    for mode in ("hot", "cold"):
        assert case["derived"][mode]["speedup_half_scales_vs_ort_best"] > 0
        assert case["derived"][mode]["roofline_fraction"]["lutc-fast-half-scales"] > 0
    assert "lutc fast half-scales vs ORT best" in (tmp_path / "kernels.md").read_text()
