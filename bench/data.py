"""Speed of the data sources: built-in shard generation, shard reading, and download + verify.

    python bench/data.py                                        # built-in world only
    python bench/data.py ../shared/data/pretrain/shard_0000*.parquet   # also read and download these

Generation: documents/s and MB/s of `dataset.generate_synthetic`. Reading: characters/s of
`shards.iter_texts`. Download: MB/s of `download.fetch` with parquet verification, from a
local HTTP server on 127.0.0.1 serving the given files (so the figure is the cost on our side:
transfer, sha256, full parquet check, rename), plus `dataset.fetch_shards` with 4 workers.
"""

import argparse
import functools
import shutil
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from snakechat import dataset
from snakechat.data import download
from snakechat.data.shards import iter_texts


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_generate(tmp, seed, shards, docs):
    entries, s = timed(lambda: dataset.generate_synthetic(tmp, seed, shards, docs))
    mb = sum(e["bytes"] for e in entries) / 1e6
    chars = sum(len(t) for t in iter_texts(sorted(Path(tmp).glob("shard_*.parquet"))))
    print(f"generate: {shards * docs} documents ({chars / 1e6:.1f} M chars, {mb:.1f} MB parquet) in {s:.2f} s = {shards * docs / s:,.0f} docs/s, {chars / s / 1e6:.2f} M chars/s")


def bench_read(paths):
    chars, s = timed(lambda: sum(len(t) for t in iter_texts(paths)))
    print(f"iter_texts: {chars / 1e6:.1f} M chars from {len(paths)} shards in {s:.2f} s = {chars / s / 1e6:.1f} M chars/s")


def bench_download(paths, tmp):
    root = Path(tmp) / "www"
    root.mkdir()
    for i, p in enumerate(paths):
        shutil.copy(p, root / dataset.shard_name(i))
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/shard_{{index:05d}}.parquet"
    try:
        total = sum(p.stat().st_size for p in paths) / 1e6
        _, s = timed(lambda: [download.fetch(url.format(index=i), Path(tmp) / "one" / dataset.shard_name(i), verify=dataset.check_shard, log=lambda *a: None) for i in range(len(paths))])
        print(f"fetch (1 at a time, verified): {total:.1f} MB in {s:.2f} s = {total / s:.1f} MB/s")
        _, s = timed(lambda: dataset.fetch_shards(Path(tmp) / "pool", url, len(paths), workers=4))
        print(f"fetch_shards (4 workers): {total:.1f} MB in {s:.2f} s = {total / s:.1f} MB/s")
        _, s = timed(lambda: dataset.fetch_shards(Path(tmp) / "pool", url, len(paths), workers=4))
        print(f"fetch_shards re-run (all present, re-hashed): {s:.2f} s")
    finally:
        server.shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="*", type=Path, help="parquet shards to read and serve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gen-shards", type=int, default=2)
    parser.add_argument("--docs-per-shard", type=int, default=4096)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bench_generate(Path(tmp) / "gen", args.seed, args.gen_shards, args.docs_per_shard)
        if args.shards:
            bench_read(args.shards)
            bench_download(args.shards, tmp)


if __name__ == "__main__":
    main()
