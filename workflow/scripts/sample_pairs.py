"""Glue: the first few test pairs of a prepared data set as a `mitp predict --batch` file (written atomically)."""

import json
from pathlib import Path

import pyarrow.parquet as pq

from mitp.files.atomic import atomic_writer

data_dir = Path(snakemake.input[0]).parent  # noqa: F821 (injected by Snakemake)
table = pq.read_table(data_dir / "test.parquet").to_pydict()
count = min(snakemake.params.pairs, len(table["id"]))  # noqa: F821
with atomic_writer(Path(snakemake.output[0])) as f:  # noqa: F821
    for image, text in zip(table["image"][:count], table["text"][:count], strict=True):
        f.write(json.dumps({"image": str((data_dir / image).resolve()), "text": text}) + "\n")
