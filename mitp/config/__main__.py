"""`python -m mitp.config > workflow/schemas/config.schema.yaml`: write the generated Snakemake schema."""

import sys

from .schema import schema_yaml

sys.stdout.write(schema_yaml())
