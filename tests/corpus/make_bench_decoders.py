"""Make the SmolLM2-135M-shaped decoders the README's decode benchmark runs (85-165 MB each, so
they are not committed): 30 layers, hidden 576, GQA 9/3, intermediate 1536, vocab 49152, tied
embeddings, random weights.

- ``smol_int4.onnx`` (+ ``int4/``, the builder's folder for onnxruntime-genai's generator):
  onnxruntime-genai's model builder, ``-p int4 -e cpu``;
- ``smol_q2.onnx``: the builder's ``-p fp32`` graph, 2-bit block 32 by ``MatMulNBitsQuantizer``;
- ``smol_ts_q4.onnx``: ``torch.onnx.export`` (TorchScript) with ``past_key_values``, 4-bit block
  32 by ``MatMulNBitsQuantizer``.

Same environment as ``make_builder_corpus.py``. Run::

    python tests/corpus/make_bench_decoders.py OUT_DIR
    python -m lutc.bench generate OUT_DIR/smol_int4.onnx --threads 1 2 --genai-dir OUT_DIR/int4
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_corpus
from make_builder_corpus import requantize, run_builder, save_checkpoint

SMOLLM2 = {
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "rope_theta": 100000.0,
}  # fmt: skip


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data")
    print(f"wrote {path}", flush=True)


def torch_export(out: Path, tmp: Path) -> None:
    """The TorchScript decode export of make_corpus.py at SmolLM2's shape, quantized to 4 bits."""
    import torch
    import transformers

    for name, value in (("VOCAB", 49152), ("HIDDEN", 576), ("INTER", 1536), ("LAYERS", 30), ("HEADS", 9)):
        setattr(make_corpus, name, value)
    torch.manual_seed(make_corpus.SEED)
    config = transformers.LlamaConfig(**SMOLLM2)
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config).eval()
    spec = make_corpus.Spec("smol_ts_q4", "qwen2", "torchscript", "named", "decode", 4, 32, True)  # GQA signature
    inputs, outputs = make_corpus.io_signature(spec, config)
    args = make_corpus.torch_args(spec, inputs, make_corpus.EXAMPLE["decode"])
    make_corpus.export(spec, make_corpus.Decode(model, config).eval(), args, inputs, outputs, str(tmp / "float.onnx"))
    _save(make_corpus.quantize(spec, onnx.load(str(tmp / "float.onnx"))), out / "smol_ts_q4.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        checkpoint = tmp / "hf"
        save_checkpoint("llama", checkpoint, SMOLLM2)
        _save(run_builder(checkpoint, out / "int4", "int4", tmp / "cache"), out / "smol_int4.onnx")
        _save(requantize(run_builder(checkpoint, tmp / "fp32", "fp32", tmp / "cache"), 32), out / "smol_q2.onnx")
        torch_export(out, tmp)


if __name__ == "__main__":
    main()
