"""Scoring collections of image-caption pairs: `mitp score` (torch-free).

    engine      one machine: one onnxruntime session, decoding ahead in worker processes, resumable shards
    inputs      the collection's shards and their rows: parquet, CSV, JSON lines, WebDataset tars
"""
