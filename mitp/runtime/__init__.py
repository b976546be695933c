"""mitp's inference runtime: bundle reading, image preprocessing, tokenization, prediction, verification.

Imports neither torch nor transformers, so `pip install ".[cpu]"` (from a clone or a wheel) is enough to run a bundle. The
training side (mitp.data.dataset, mitp.ship.export, ...) imports its preprocessing and tokenizer from here, so one
rule serves both.
"""
