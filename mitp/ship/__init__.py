"""What leaves the project: the ONNX bundle (export), release folders with their model card, and the
Hugging Face Hub calls."""
