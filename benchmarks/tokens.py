"""Token ids at a run's start, at SNLI-VE's size: tokenizing every caption at once (mitp before) against
chunked tokenization stored once beside the split (mitp.data.tokens), and long MM-IMDB-like plots whole against
cut to their first 77 words (mitp.runtime.tokenizer.clean_head). Each start runs in a fresh process and
reports its wall time and peak RSS growth.

    python benchmarks/tokens.py --tokenizer tokenizer.json        # OpenAI CLIP's BPE (see below)
    python benchmarks/tokens.py                                   # the in-process word tokenizer

OpenAI CLIP's tokenizer.json comes with the backbone (`mitp fetch-backbone openai/clip-vit-large-patch14`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "a an the of and with on in at to is are this that two three man woman men women people dog dogs child girl boy "
    "person group red blue green white black young old small large standing sitting walking running playing riding "
    "outside inside street water beach park snow grass field ball bike car wearing shirt hat jacket holding looking "
    "near front next while some there his her their who sleeping eating talking working crowd table room building"
).split()

START = textwrap.dedent("""
    import json, sys, time
    from mitp.config import parse_config, resolve_run
    from mitp.data.dataset import build_split
    from mitp.runtime.tokenizer import build_word_tokenizer, load_tokenizer_file

    def mb(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

    data_dir, tokenizer_file, mode = sys.argv[1:4]
    tokenizer = load_tokenizer_file(tokenizer_file) if tokenizer_file else build_word_tokenizer()
    config = {"backbone": "preset:tiny", "datasets": {"snli": {"task": "single-label", "data_dir": data_dir}},
              "settings": {"mitp": {"variant": "mitp"}}}
    run = resolve_run(parse_config(config), "snli", "mitp")
    open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
    base, started = mb("VmRSS"), time.perf_counter()
    if mode == "all-at-once":  # mitp before: every caption of the split in one tokenizer call
        import pyarrow.parquet as pq
        ids, mask = tokenizer(pq.read_table(f"{data_dir}/train.parquet", columns=["text"]).column("text").to_pylist())
        rows, source = len(ids), "all captions in one call"
    else:
        split = build_split(run, "train", tokenizer, 224)
        rows, source = len(split), split.token_source
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_growth_mb": mb("VmHWM") - base, "rows": rows, "source": source}))
""")


def make_snlive(raw: Path, pairs: int, seed: int = 0) -> None:
    """SNLI-VE's layout: hypotheses of 5-14 common words sharing 32 images (as SNLI-VE's share Flickr30k's)."""
    rng = np.random.default_rng(seed)
    (raw / "flickr30k_images").mkdir(parents=True)
    for i in range(32):
        Image.new("RGB", (64, 48), (7 * i, 120, 200)).save(raw / "flickr30k_images" / f"{i}.jpg")
    for upstream, count in (("train", pairs), ("dev", 2_000), ("test", 2_000)):
        with open(raw / f"snli_ve_{upstream}.jsonl", "w") as f:
            for n in range(count):
                text = " ".join(rng.choice(WORDS, rng.integers(5, 15))) + "."
                f.write(json.dumps({"Flickr30K_ID": str(n % 32), "sentence2": text, "gold_label": "neutral", "pairID": f"{upstream}{n}"}) + "\n")


def start(data_dir: Path, tokenizer: str, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", START, str(data_dir), tokenizer, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def long_plots(tokenizer_file: str, count: int = 500, words: int = 2_000) -> tuple[float, float]:
    """Microseconds per plot of `words` words: cleaned and tokenized whole, against cut to its head first."""
    from mitp.runtime.tokenizer import build_word_tokenizer, clean_caption, load_tokenizer_file

    tokenizer = load_tokenizer_file(tokenizer_file) if tokenizer_file else build_word_tokenizer()
    rng = np.random.default_rng(1)
    plots = [" ".join(rng.choice(WORDS, words)) for _ in range(count)]
    started = time.perf_counter()
    tokenizer.tokenizer.encode_batch([clean_caption(p) for p in plots])
    whole = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    tokenizer.encode(plots)
    head = (time.perf_counter() - started) / count * 1e6
    return whole, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="", help="a tokenizer.json (default: the in-process word tokenizer)")
    parser.add_argument("--pairs", type=int, default=529_527, help="training hypotheses (SNLI-VE: 529,527)")
    args = parser.parse_args()
    from mitp.data.prepare import prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        make_snlive(Path(tmp) / "raw", args.pairs)
        prepare_dataset("snlive", Path(tmp) / "raw", Path(tmp) / "snli")
        rows = [
            ("all captions at once (before)", start(Path(tmp) / "snli", args.tokenizer, "all-at-once")),
            ("first start: chunked, stored", start(Path(tmp) / "snli", args.tokenizer, "split")),
            ("next start: stored ids read", start(Path(tmp) / "snli", args.tokenizer, "split")),
        ]
    whole, head = long_plots(args.tokenizer)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}")
    print(f"tokenizer: {args.tokenizer or 'in-process word tokenizer'}; {args.pairs:,} training captions (SNLI-VE layout)")
    print("| start | seconds | peak RSS growth (MB) |\n|---|---|---|")
    for name, row in rows:
        print(f"| {name} | {row['seconds']:.1f} | {row['peak_growth_mb']:.0f} |")
    print(f"2,000-word plots: {whole:.0f} us each tokenized whole, {head:.0f} us cut to their first 77 words")


if __name__ == "__main__":
    main()
