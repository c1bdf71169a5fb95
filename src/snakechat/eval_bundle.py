"""CORE eval bundles: written by the built-in world, or downloaded as a zip (DCLM's eval_bundle.zip).

Either way the result is `results/eval_bundle/{bundle}/` in the DCLM layout: `core.yaml`
(`icl_tasks`), `eval_data/**.jsonl`, `eval_meta_data.csv`, plus `source.json` (where it came from).
The bundle is assembled in a temporary directory, checked (every task file present, every task in
the meta data), and only then moved into place, so a bundle with a core.yaml is always complete.

    python -m snakechat.eval_bundle --out results/eval_bundle/tinyworld/core.yaml --kind synthetic --seed 0
    python -m snakechat.eval_bundle --out results/eval_bundle/core/core.yaml --kind http \
        --url https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip [--sha256 HEX] \
        --retries 5 --timeout 60 --backoff 2 --max-retry-wait 120 --max-bytes 4294967296

Needs no inputs (synthetic) or the network (http). The downloaded zip is kept beside the bundle
(`results/eval_bundle/{bundle}.zip`) so that a re-run does not fetch it again, if it still matches
the record of its download (size and sha256); a zip that does not is named and fetched again.
"""

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path

from snakechat.data import download
from snakechat.evaluate.core_bundle import load_bundle, write_source
from snakechat.runtime.provenance import record
from snakechat.runtime.settings import finite_float


def check_bundle(root):
    """{label: rows} of a bundle directory, every task file read and checked as base_eval will read
    it (snakechat.evaluate.core_bundle); raises BundleError (a ValueError) naming the file and task at fault."""
    return {task.label: len(task.items) for task in load_bundle(root)}


def bundle_root(extracted):
    """The directory of an unpacked zip that holds core.yaml: the top level or a single folder in it."""
    extracted = Path(extracted)
    if (extracted / "core.yaml").is_file():
        return extracted
    found = [d for d in extracted.iterdir() if d.is_dir() and (d / "core.yaml").is_file()]
    if len(found) != 1:
        raise ValueError("the zip has no core.yaml at its top level or in exactly one folder below it")
    return found[0]


MAX_UNPACKED_BYTES = 4 << 30  # DCLM's eval_bundle.zip unpacks to well under this
MAX_RATIO = 100  # unpacked / packed bytes of one member: text compresses ~5-20x, a bomb ~1000x
MAX_MEMBERS = 100_000


def check_sizes(z, max_unpacked_bytes=MAX_UNPACKED_BYTES, max_ratio=MAX_RATIO):
    """Raise unless the zip's members, as its directory declares them, stay within the caps. The
    declared sizes bound what is written: zipfile stops a member at its declared size (and its CRC
    check then fails), so checking them before any byte is unpacked bounds the disk a zip can fill."""
    members = z.infolist()
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"{len(members)} members, more than the {MAX_MEMBERS} a bundle may have")
    total = sum(m.file_size for m in members)
    if total > max_unpacked_bytes:
        raise ValueError(f"it unpacks to {total} bytes, more than max_unpacked_bytes {max_unpacked_bytes}")
    for m in members:
        if m.file_size > max_ratio * max(m.compress_size, 1) and m.file_size > 1 << 20:
            raise ValueError(f"member {m.filename} unpacks {m.compress_size} bytes to {m.file_size} "
                             f"(over max_ratio {max_ratio}: a zip bomb, or data no bundle holds)")


def check_zip(path, max_unpacked_bytes=MAX_UNPACKED_BYTES, max_ratio=MAX_RATIO):
    """Raise unless `path` is a readable zip within the size caps with a core.yaml at the top or one folder down."""
    with zipfile.ZipFile(path) as z:
        check_sizes(z, max_unpacked_bytes, max_ratio)  # before testzip, which unpacks every member
        bad = z.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} fails its CRC check")
        names = z.namelist()
    if not any(n == "core.yaml" or (n.count("/") == 1 and n.endswith("/core.yaml")) for n in names):
        raise ValueError("no core.yaml in the zip (at the top level or one folder down)")


def install(build, out_dir):
    """Build a bundle with build(tmp_dir) -> bundle dir, check it, then move it to `out_dir`.

    The old directory (if any) is moved aside before the new one is renamed in, so `out_dir`
    never holds a mix of two bundles.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        root = build(work)
        rows = check_bundle(root)
        if out_dir.exists():
            old = work / "previous"
            out_dir.rename(old)
        root.rename(out_dir)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def from_world(out_dir, seed):
    from snakechat.world import bundle as world_bundle

    def build(work):
        world_bundle.write_bundle(work / "bundle", seed)
        return work / "bundle"

    return install(build, out_dir)


def from_zip(out_dir, zip_path, max_unpacked_bytes=MAX_UNPACKED_BYTES, max_ratio=MAX_RATIO):
    def build(work):
        with zipfile.ZipFile(zip_path) as z:
            check_sizes(z, max_unpacked_bytes, max_ratio)
            z.extractall(work / "unpacked")
        return bundle_root(work / "unpacked")

    try:
        return install(build, out_dir)
    except ValueError as e:
        raise ValueError(f"{zip_path}: not a usable eval bundle: {e}") from e


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the bundle's core.yaml; the bundle is the directory around it")
    parser.add_argument("--kind", choices=["synthetic", "http"], required=True)
    parser.add_argument("--seed", type=int, default=0, help="synthetic: the world's seed")
    parser.add_argument("--url", help="http: the bundle zip")
    parser.add_argument("--sha256", help="http: expected sha256 of the zip")
    parser.add_argument("--max-unpacked-bytes", type=int, default=MAX_UNPACKED_BYTES, help="http: most bytes the zip may unpack to, checked before unpacking")
    parser.add_argument("--max-ratio", type=finite_float, default=MAX_RATIO, help="http: most unpacked bytes per packed byte of a member over 1 MiB")
    download.add_http_arguments(parser, workers=False)
    args = parser.parse_args(argv)
    if args.kind == "http" and args.url is None:
        parser.error("--kind http needs --url")

    out = Path(args.out)
    if out.name != "core.yaml":
        parser.error(f"--out must name the bundle's core.yaml, not {out.name!r}")
    out_dir = out.parent
    if args.kind == "synthetic":
        settings = {"kind": "synthetic", "seed": args.seed}
        rows = from_world(out_dir, args.seed)
        source = {}
    else:
        settings = {k: getattr(args, k) for k in ("kind", "url", "sha256", "max_unpacked_bytes", "max_ratio", *download.HTTP_SETTINGS)}
        zip_path = out_dir.parent / f"{out_dir.name}.zip"
        caps = {"max_unpacked_bytes": args.max_unpacked_bytes, "max_ratio": args.max_ratio}
        source = download.fetch(args.url, zip_path, sha256=args.sha256, verify=lambda path: check_zip(path, **caps), **download.http_settings(args))
        try:
            rows = from_zip(out_dir, zip_path, **caps)
        except ValueError:
            zip_path.unlink()  # a later run must not take this zip as good
            download.record_path(zip_path).unlink(missing_ok=True)
            raise
    write_source(out_dir, source=source, tasks=rows, provenance=record("snakechat.eval_bundle", settings))
    print(f"wrote {out_dir}: {len(rows)} tasks, {sum(rows.values())} items", flush=True)


if __name__ == "__main__":
    main()
