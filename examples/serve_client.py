"""Call a model that `mitp serve` serves, with tritonclient (any Open Inference Protocol client will do).

    mitp serve BUNDLE --name food &
    python examples/serve_client.py http://127.0.0.1:8080 food IMAGE "caption" [IMAGE "caption" ...]

Prints one JSON line per pair: the decided label(s) and the probability of each class, in the bundle's label
order (bundle.json `labels`). Needs only tritonclient[http]
and numpy: pip install "tritonclient[http]".
"""

import json
import sys
from urllib.parse import urlparse

import numpy as np
import tritonclient.http as httpclient

url, model, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
if not rest or len(rest) % 2:
    raise SystemExit(__doc__)
images, captions = rest[0::2], rest[1::2]
address = urlparse(url if "://" in url else f"http://{url}")
client = httpclient.InferenceServerClient(address.netloc, ssl=address.scheme == "https")

image = httpclient.InferInput("image", [len(images)], "BYTES")
image.set_data_from_numpy(np.array([open(path, "rb").read() for path in images], dtype=object))  # the files' bytes
text = httpclient.InferInput("text", [len(captions)], "BYTES")
text.set_data_from_numpy(np.array([c.encode() for c in captions], dtype=object))
result = client.infer(model, [image, text])

probabilities, decisions = result.as_numpy("probabilities"), result.as_numpy("label")  # (B, K), (B,)
for i, path in enumerate(images):
    print(json.dumps({"image": path, "labels": decisions[i].decode().split("|") if decisions[i] else [], "probabilities": probabilities[i].round(6).tolist()}))
