"""The test suite. Importing this package runs before conftest.py and before any test imports mitp, so the
environment is settled here first."""

import atexit
import os
import shutil
import tempfile

# The suite never depends on the caller's Hugging Face environment (docs tell offline nodes to set
# HF_HUB_OFFLINE=1; users set HF_HOME, HF_ENDPOINT, HF_TOKEN): cleared before huggingface_hub is first
# imported (its constants are read then), with a fresh, empty HF_HOME. A test that needs one sets it.
for _name in [n for n in os.environ if n.startswith(("HF_", "HUGGINGFACE_")) or n in ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE")]:
    del os.environ[_name]
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mitp-tests-hf-")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
