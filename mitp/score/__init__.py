"""Scoring collections of image-caption pairs: `mitp score` (torch-free).

    inputs      the collection's shards and their rows: parquet, CSV, JSON lines, WebDataset tars
"""
