"""GGUF in: a llama.cpp model file converted to an ONNX decoder folder in onnxruntime-genai's op set."""
