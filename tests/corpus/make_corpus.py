"""Regenerate the exporter-made ONNX corpus under ``tests/corpus``.

Builds small random-init ``transformers`` models (2 layers, hidden 256), exports them with the
TorchScript or the dynamo ``torch.onnx`` exporter, quantizes their MatMul weights with
onnxruntime's ``MatMulNBitsQuantizer`` and writes ``manifest.json``. Every model is checked in
onnxruntime (CPU EP, optimizations off and default) on both of its feed recipes.

Needs torch, transformers, onnx, onnxruntime, onnxscript (see README.md). Run::

    python tests/corpus/make_corpus.py [--out tests/corpus] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnxruntime.quantization import QuantFormat
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feeds import make_feeds

VOCAB = 256
HIDDEN = 256
INTER = 384
LAYERS = 2
HEADS = 4
MAX_POS = 128
SEED = 0
GPT2_HIDDEN = 128


@dataclasses.dataclass(frozen=True)
class Spec:
    """One corpus model: how to build, export and quantize it."""

    name: str
    family: str  # llama | qwen2 | gpt2 | bert
    exporter: str  # torchscript | dynamo
    dims: str  # static | Dim.AUTO | named (TorchScript dynamic_axes or dynamo Dim("batch"), ...)
    phase: str  # prefill | decode
    bits: int
    block: int
    symmetric: bool
    qdq: bool = False
    ort_optimize: bool = False
    opset: int = 17


SPECS = [
    Spec("llama_ts_prefill_q4b32s", "llama", "torchscript", "named", "prefill", 4, 32, True),
    Spec("llama_ts_decode_q4b128a", "llama", "torchscript", "named", "decode", 4, 128, False),
    Spec("llama_ts_prefill_q2b32s", "llama", "torchscript", "named", "prefill", 2, 32, True),
    Spec("llama_ts_prefill_static_q2b64a", "llama", "torchscript", "static", "prefill", 2, 64, False),
    Spec("llama_ts_prefill_qdq4b32s", "llama", "torchscript", "named", "prefill", 4, 32, True, qdq=True),
    Spec("llama_ts_prefill_qdq4b128a", "llama", "torchscript", "named", "prefill", 4, 128, False, qdq=True),
    Spec("llama_dynamo_prefill_q4b32a", "llama", "dynamo", "Dim.AUTO", "prefill", 4, 32, False, opset=18),
    Spec("qwen2_ts_prefill_q4b128s", "qwen2", "torchscript", "named", "prefill", 4, 128, True),
    Spec("qwen2_dynamo_prefill_q4b32s", "qwen2", "dynamo", "Dim.AUTO", "prefill", 4, 32, True, opset=18),
    Spec("qwen2_dynamo_decode_q2b128a", "qwen2", "dynamo", "named", "decode", 2, 128, False, opset=18),
    Spec("gpt2_ts_prefill_q4b32s", "gpt2", "torchscript", "named", "prefill", 4, 32, True),
    Spec("bert_ts_q4b32s", "bert", "torchscript", "named", "prefill", 4, 32, True),
    Spec("bert_ts_ortopt_q4b32s", "bert", "torchscript", "named", "prefill", 4, 32, True, ort_optimize=True),
]

_DECODE = (
    "Decode wrapper takes flat past tensors and builds a transformers DynamicCache inside; exported with example "
    "seq=3 (dynamo would specialize seq=1), run with seq=1."
)
NOTES = {
    "llama_ts_decode_q4b128a": _DECODE,
    "llama_ts_prefill_qdq4b32s": "onnx.version_converter 17->21 before QDQ (int4 needs opset 21 / IR 10).",
    "llama_ts_prefill_qdq4b128a": "onnx.version_converter 17->21 before QDQ (uint4 + uint4 zero points).",
    "llama_dynamo_prefill_q4b32a": "Dim.AUTO: dim names are symbolic (s72, s53, ...); mask batch gets its own symbol.",
    "qwen2_dynamo_prefill_q4b32s": "Dim.AUTO: dim names are symbolic (s72, s53, ...); mask batch gets its own symbol.",
    "qwen2_dynamo_decode_q2b128a": _DECODE
    + " attention_mask length (past+seq) is Dim.AUTO: torch.export cannot name a sum of two dims.",
    "gpt2_ts_prefill_q4b32s": "hidden 128 / inner 256 to keep the file small. Conv1D exports as float Gemm (not "
    "quantized); the tied lm_head is constant-folded to a transposed copy of wte and quantized (wte stays in Gather).",
    "bert_ts_ortopt_q4b32s": "optimize_model first: fused Attention keeps packed float QKV weights (not quantized); "
    "the optimizer also adds opset imports for many unused domains.",
}

# Concrete sizes of the two feed recipes: (batch, seq, past).
PRIMARY = {"prefill": (1, 8, 0), "decode": (1, 1, 8)}
ALT = {"prefill": (2, 13, 0), "decode": (2, 1, 5)}
# Example sizes used while exporting (dynamo specializes dims of size 0/1 and equal sizes).
EXAMPLE = {"prefill": (2, 7, 0), "decode": (2, 3, 9)}


def build_torch_model(family: str) -> tuple[torch.nn.Module, Any]:
    """Return a random-init eval-mode model and its config for one family."""
    torch.manual_seed(SEED)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POS,
    )
    if family == "llama":
        cfg = transformers.LlamaConfig(num_key_value_heads=HEADS, tie_word_embeddings=False, **common)
    elif family == "qwen2":
        cfg = transformers.Qwen2Config(num_key_value_heads=2, tie_word_embeddings=False, **common)
    elif family == "gpt2":
        # GPT-2 is smaller (hidden 128, inner 256): its Conv1D weights become float Gemm the quantizer skips.
        cfg = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_embd=GPT2_HIDDEN,
            n_inner=2 * GPT2_HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=MAX_POS,
            tie_word_embeddings=True,
            bos_token_id=VOCAB - 1,
            eos_token_id=VOCAB - 1,
        )
    elif family == "bert":
        cfg = transformers.BertConfig(type_vocab_size=2, **common)
    else:
        raise ValueError(family)
    cfg._attn_implementation = "eager"
    if family == "bert":
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    else:
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    return model.eval(), cfg


class Prefill(torch.nn.Module):
    """Causal LM without cache: (input_ids, attention_mask) -> logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class Decode(torch.nn.Module):
    """Causal LM with flat past tensors: builds a DynamicCache inside, returns logits and presents."""

    def __init__(self, model: torch.nn.Module, cfg: Any) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        cache = transformers.DynamicCache(
            ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(LAYERS)], config=self.cfg
        )
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        presents: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


class Bert(torch.nn.Module):
    """BertModel: (input_ids, attention_mask, token_type_ids) -> last_hidden_state."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def io_signature(spec: Spec, cfg: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Symbolic input table {name: {shape, dtype, kind}} and the output names."""
    dyn = spec.dims != "static"
    b, s, _ = PRIMARY[spec.phase]
    bat = "batch" if dyn else b
    seq = "seq" if dyn else s
    inputs: dict[str, dict[str, Any]] = {
        "input_ids": {"shape": [bat, seq], "dtype": "int64", "kind": "ids", "high": VOCAB},
    }
    if spec.phase == "decode":
        kv = cfg.num_key_value_heads
        hd = HIDDEN // HEADS
        inputs["attention_mask"] = {"shape": [bat, "past+seq"], "dtype": "int64", "kind": "ones"}
        inputs["position_ids"] = {"shape": [bat, seq], "dtype": "int64", "kind": "positions"}
        for i in range(LAYERS):
            for t in ("key", "value"):
                inputs[f"past_key_values.{i}.{t}"] = {
                    "shape": [bat, kv, "past", hd],
                    "dtype": "float32",
                    "kind": "normal",
                }
        outputs = ["logits"] + [f"present.{i}.{t}" for i in range(LAYERS) for t in ("key", "value")]
    else:
        inputs["attention_mask"] = {"shape": [bat, seq], "dtype": "int64", "kind": "ones"}
        outputs = ["logits"]
    if spec.family == "bert":
        inputs["token_type_ids"] = {"shape": [bat, seq], "dtype": "int64", "kind": "zeros"}
        outputs = ["last_hidden_state"]
    return inputs, outputs


def concrete(inputs: dict[str, dict[str, Any]], sizes: tuple[int, int, int]) -> dict[str, dict[str, Any]]:
    """Resolve symbolic dims of an input table to one concrete feed recipe."""
    b, s, p = sizes
    env = {"batch": b, "seq": s, "past": p, "past+seq": p + s}
    out = {}
    for name, info in inputs.items():
        rec = {k: v for k, v in info.items() if k != "shape"}
        rec["shape"] = [env[d] if isinstance(d, str) else d for d in info["shape"]]
        if info["kind"] == "positions":
            rec["start"] = p
        out[name] = rec
    return out


def torch_args(spec: Spec, inputs: dict[str, dict[str, Any]], sizes: tuple[int, int, int]) -> tuple[Any, ...]:
    """Example torch arguments for export, in the wrapper's positional order."""
    arrs = {k: torch.from_numpy(v) for k, v in make_feeds({"feeds": concrete(inputs, sizes)}, seed=1).items()}
    if spec.family == "bert":
        return (arrs["input_ids"], arrs["attention_mask"], arrs["token_type_ids"])
    if spec.phase == "prefill":
        return (arrs["input_ids"], arrs["attention_mask"])
    past = tuple(v for k, v in arrs.items() if k.startswith("past_key_values."))
    return (arrs["input_ids"], arrs["attention_mask"], arrs["position_ids"], past)


def dynamo_shapes(spec: Spec, inputs: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
    """dynamic_shapes for the dynamo exporter, matching :func:`torch_args`."""
    Dim = torch.export.Dim
    if spec.dims == "Dim.AUTO":
        env = {"batch": Dim.AUTO, "seq": Dim.AUTO, "past": Dim.AUTO, "past+seq": Dim.AUTO}
    else:
        env = {
            "batch": Dim("batch", min=1, max=64),
            "seq": Dim("seq", min=1, max=MAX_POS),
            "past": Dim("past", min=1, max=MAX_POS),
            "past+seq": Dim.AUTO,
        }
    specs = [{i: env[d] for i, d in enumerate(info["shape"]) if isinstance(d, str)} for info in inputs.values()]
    if spec.phase == "decode":
        return (specs[0], specs[1], specs[2], tuple(specs[3:]))
    return tuple(specs)


def export(
    spec: Spec,
    wrapper: torch.nn.Module,
    args: tuple[Any, ...],
    inputs: dict[str, dict[str, Any]],
    outputs: list[str],
    path: str,
) -> None:
    """Export the wrapper to a self-contained float ONNX file."""
    names = list(inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec.exporter == "torchscript":
            axes = None
            if spec.dims != "static":
                axes = {n: {i: d for i, d in enumerate(inputs[n]["shape"]) if isinstance(d, str)} for n in names}
                axes["logits" if "logits" in outputs else outputs[0]] = {0: "batch", 1: "seq"}
                for o in outputs[1:]:
                    axes[o] = {0: "batch", 2: "past+seq"}
            torch.onnx.export(
                wrapper,
                args,
                path,
                dynamo=False,
                opset_version=spec.opset,
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
            )
        else:
            prog = torch.onnx.export(
                wrapper,
                args,
                dynamo=True,
                opset_version=spec.opset,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=dynamo_shapes(spec, inputs),
                verbose=False,
            )
            prog.save(path, external_data=False)
    model = onnx.load(path)
    for node in model.graph.node:  # drop stack traces / fx dumps (machine paths, ~15% of the file); keep namespace
        keep = [p for p in node.metadata_props if p.key == "namespace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, path, save_as_external_data=False)


def quantize(spec: Spec, model: onnx.ModelProto) -> onnx.ModelProto:
    """MatMulNBits (QOperator) or DequantizeLinear->MatMul (QDQ) weight-only quantization."""
    if spec.qdq and model.opset_import[0].version < 21:
        from onnx import version_converter

        model = version_converter.convert_version(model, 21)
    q = MatMulNBitsQuantizer(
        model,
        bits=spec.bits,
        block_size=spec.block,
        is_symmetric=spec.symmetric,
        quant_format=QuantFormat.QDQ if spec.qdq else QuantFormat.QOperator,
    )
    q.process()
    return q.model.model


def count_matmuls(model: onnx.ModelProto) -> dict[str, int]:
    """Quantized vs float MatMul/Gemm counts (float ones split into constant-weight and activation-only)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    lut = flt = flt_w = 0
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            lut += 1
        elif n.op_type in ("MatMul", "Gemm"):
            b = n.input[1]
            src = producers.get(b)
            if src is not None and src.op_type == "DequantizeLinear":
                lut += 1
                continue
            flt += 1
            while src is not None and src.op_type in ("Transpose", "Identity", "Cast"):
                b = src.input[0]
                src = producers.get(b)
            flt_w += b in consts
    return {"lut_matmuls": lut, "float_matmuls": flt, "float_weight_matmuls": flt_w}


def quantizer_desc(spec: Spec) -> str:
    """Human-readable quantizer description for the manifest."""
    if spec.qdq:
        kind = "int4" if spec.symmetric else "uint4"
        return f"MatMulNBitsQuantizer QDQ {kind} block={spec.block} {'symmetric' if spec.symmetric else 'asymmetric'}"
    sym = "symmetric" if spec.symmetric else "asymmetric"
    return f"MatMulNBitsQuantizer bits={spec.bits} block={spec.block} {sym}"


def ort_check(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Run the model in ORT (CPU EP; optimizations off and default) on both recipes; outputs must be finite."""
    result: dict[str, Any] = {}
    for level_name, level in (
        ("disable_all", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("default", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for alt in (False, True):
            outs = sess.run(None, make_feeds(entry, alt=alt))
            assert all(np.isfinite(o).all() for o in outs), (path, level_name, alt)
            result[f"{level_name}{'_alt' if alt else ''}"] = [list(o.shape) for o in outs]
    return result


def max_diff_vs_torch(path: str, wrapper: torch.nn.Module, spec: Spec, entry: dict[str, Any]) -> float:
    """Max abs difference of the first output between ORT (float export) and torch on the alt recipe."""
    feeds = make_feeds(entry, alt=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        if spec.family == "bert":
            ref = wrapper(t["input_ids"], t["attention_mask"], t["token_type_ids"])
        elif spec.phase == "prefill":
            ref = wrapper(t["input_ids"], t["attention_mask"])
        else:
            past = tuple(v for k, v in t.items() if k.startswith("past_key_values."))
            ref = wrapper(t["input_ids"], t["attention_mask"], t["position_ids"], past)[0]
    return float(np.abs(got - ref.numpy()).max())


def make_one(spec: Spec, out_dir: Path) -> dict[str, Any]:
    """Build, export, quantize and check one model; return its manifest entry."""
    model, cfg = build_torch_model(spec.family)
    if spec.family == "bert":
        wrapper: torch.nn.Module = Bert(model)
    elif spec.phase == "prefill":
        wrapper = Prefill(model)
    else:
        wrapper = Decode(model, cfg)
    wrapper.eval()
    inputs, outputs = io_signature(spec, cfg)
    example = EXAMPLE[spec.phase] if spec.dims != "static" else PRIMARY[spec.phase]
    args = torch_args(spec, inputs, example)
    entry: dict[str, Any] = {"file": f"{spec.name}.onnx", "family": spec.family}
    entry["exporter"] = f"{spec.exporter} (torch {torch.__version__})"
    entry["dims"] = spec.dims
    entry["phase"] = spec.phase
    if spec.name in NOTES:
        entry["notes"] = NOTES[spec.name]
    entry["quantizer"] = quantizer_desc(spec)
    entry["bits"], entry["block_size"], entry["symmetric"] = spec.bits, spec.block, spec.symmetric
    entry["onnxruntime"], entry["transformers"] = ort.__version__, transformers.__version__
    entry["config"] = {
        "layers": LAYERS,
        "hidden": cfg.hidden_size,
        "intermediate": getattr(cfg, "n_inner", None) or cfg.intermediate_size,
        "heads": cfg.num_attention_heads,
        "kv_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
        "vocab": cfg.vocab_size,
        "max_positions": MAX_POS,
        "seed": SEED,
    }
    entry["inputs"] = {k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in inputs.items()}
    entry["outputs"] = outputs
    entry["feeds"] = concrete(inputs, PRIMARY[spec.phase])
    entry["feeds_alt"] = concrete(inputs, ALT[spec.phase])
    if spec.dims == "static":
        entry["feeds_alt"] = entry["feeds"]
    with tempfile.TemporaryDirectory() as tmp:
        fpath = os.path.join(tmp, "float.onnx")
        export(spec, wrapper, args, inputs, outputs, fpath)
        entry["float_vs_torch_max_abs_diff"] = max_diff_vs_torch(fpath, wrapper, spec, entry)
        if spec.ort_optimize:
            from onnxruntime.transformers.optimizer import optimize_model

            opt = optimize_model(fpath, model_type="bert", num_heads=HEADS, hidden_size=HIDDEN)
            fpath = os.path.join(tmp, "opt.onnx")
            opt.save_model_to_file(fpath, use_external_data_format=False)
            entry["ort_optimizer"] = "optimize_model(model_type='bert', num_heads=4, hidden_size=256)"
        qmodel = quantize(spec, onnx.load(fpath))
    path = out_dir / entry["file"]
    onnx.save(qmodel, str(path), save_as_external_data=False)
    qmodel = onnx.load(str(path))
    onnx.checker.check_model(qmodel)
    actual = [i.name for i in qmodel.graph.input]
    assert actual == list(inputs), (actual, list(inputs))
    assert [o.name for o in qmodel.graph.output] == outputs
    entry["inputs"] = {
        i.name: {
            "shape": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim],
            "dtype": entry["inputs"][i.name]["dtype"],
        }
        for i in qmodel.graph.input
    }
    entry["opset"] = {o.domain or "ai.onnx": o.version for o in qmodel.opset_import}
    entry["ir_version"] = qmodel.ir_version
    entry.update(count_matmuls(qmodel))
    entry["contrib_ops"] = sorted({n.op_type for n in qmodel.graph.node if n.domain == "com.microsoft"})
    entry["op_types"] = dict(sorted(Counter(n.op_type for n in qmodel.graph.node).items()))
    entry["size_bytes"] = path.stat().st_size
    entry["ort_check"] = ort_check(str(path), entry)
    return entry


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--only", nargs="*", help="regenerate only these model names (manifest entries are merged)")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(2)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    man_path = out_dir / "manifest.json"
    old = {e["file"]: e for e in json.loads(man_path.read_text())} if a.only and man_path.exists() else {}
    entries = []
    for spec in SPECS:
        if a.only and spec.name not in a.only:
            if f"{spec.name}.onnx" in old:
                entries.append(old[f"{spec.name}.onnx"])
            continue
        e = make_one(spec, out_dir)
        print(
            f"{e['file']}: {e['size_bytes'] / 1e6:.2f} MB lut={e['lut_matmuls']} float={e['float_matmuls']} "
            f"fw={e['float_weight_matmuls']} contrib={e['contrib_ops']} diff={e['float_vs_torch_max_abs_diff']:.2e}",
            flush=True,
        )
        entries.append(e)
    man_path.write_text(json.dumps(entries, indent=1) + "\n")
    total = sum(e["size_bytes"] for e in entries)
    print(f"total {total / 1e6:.2f} MB in {len(entries)} models")


if __name__ == "__main__":
    main()
