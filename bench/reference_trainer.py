#!/usr/bin/env python3
"""An independent PyTorch implementation of the reference two-branch recipe (Wang, Li & Lazebnik,
CVPR 2016; github.com/lwwang/Two_branch_network), trained on a tandem dataset folder, to check
tandem's defaults against. A bench only: PyTorch is never a CI dependency.

  python3 bench/reference_trainer.py --data data/emoji --seed 1 [--epochs 20 --batch-size 500
      --lr 1e-4 --threads 2] [--json]

Recipe (what the reference runs): per branch Linear(d->2048), BatchNorm, ReLU, Dropout 0.5,
Linear(2048->512), L2-normalise. Euclidean distance sqrt(|a|^2 - 2ab + |b|^2 + 1e-4). Loss =
1.5 * text->image + 1.0 * image->text + 0.05 * text->text hinge terms (margin 0.05, mean of the
10 largest violations per anchor). Adam, constant lr 1e-4 (the reference computes a decay but
never passes it to the optimiser), 20 epochs of (train captions // batch) steps; each batch is
`batch` shuffled anchor captions, each with its image and one more caption of that image.
Positives are decided by image id, so copies of an image drawn twice in a batch are positives.
Validation rsum after every epoch picks the model whose test metrics are reported, ranked on the
whole split as `tandem eval` does ("full" protocol, ties broken by gallery index).

Per-epoch progress goes to stderr; the result (test R@1/5/10 both ways, rsum, best epoch, wall
seconds) to stdout, as one JSON line with --json.
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KS = (1, 5, 10)


# ---------------------------------------------------------------- data

def load_dataset(root):
    """Features as float32 tensors, each caption's image row, and the splits (image ids)."""
    images = torch.from_numpy(np.load(os.path.join(root, "images.npy")).astype(np.float32))
    texts = torch.from_numpy(np.load(os.path.join(root, "texts.npy")).astype(np.float32))
    text_to_image = np.load(os.path.join(root, "text_to_image.npy")).astype(np.int64)
    with open(os.path.join(root, "splits.json")) as f:
        splits = json.load(f)
    return images, texts, text_to_image, splits


def split_view(text_to_image, image_ids):
    """The captions (dataset order) of the split's images, with each one's image as a position
    in `image_ids` (split order): the galleries tandem ranks over."""
    local = {int(g): i for i, g in enumerate(image_ids)}
    captions = np.array([t for t, g in enumerate(text_to_image) if int(g) in local], dtype=np.int64)
    caption_image = np.array([local[int(text_to_image[t])] for t in captions], dtype=np.int64)
    return np.asarray(image_ids, dtype=np.int64), captions, caption_image


def epoch_batches(rng, captions, text_to_image, batch_size):
    """The reference's epoch: shuffle the captions, cut (n // batch) batches of anchors, give each
    anchor a different caption of its image (itself if it has only one). Returns, per batch,
    (image rows [B], caption rows [2B]: anchors then their extra captions)."""
    captions_of = {}
    for t in captions:
        captions_of.setdefault(int(text_to_image[t]), []).append(int(t))
    order = rng.permutation(captions)
    batches = []
    for s in range(len(order) // batch_size):
        anchors = order[s * batch_size:(s + 1) * batch_size]
        images = text_to_image[anchors]
        extras = []
        for a, g in zip(anchors, images):
            others = [t for t in captions_of[int(g)] if t != a]
            extras.append(rng.choice(others) if others else a)
        batches.append((images, np.concatenate([anchors, np.array(extras, dtype=np.int64)])))
    return batches


# ---------------------------------------------------------------- model

def branch(d_in, hidden=2048, dim=512, dropout=0.5):
    """One branch with PyTorch's default initialisation and BatchNorm settings."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden, eps=1e-5), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, dim))


class TwoBranch(nn.Module):
    def __init__(self, d_image, d_text):
        super().__init__()
        self.image, self.text = branch(d_image), branch(d_text)

    def embed_images(self, x):
        return F.normalize(self.image(x), dim=1)

    def embed_texts(self, x):
        return F.normalize(self.text(x), dim=1)


# ---------------------------------------------------------------- loss

def pdist(a, b):
    """The reference's Euclidean distance, all pairs."""
    return ((a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :] + 1e-4).sqrt()


def top_violations(positive, negatives, is_negative, margin, k):
    """Mean over anchors of the k largest hinge violations margin + d(pos) - d(neg), over the
    columns that are negatives of the row (others count as no violation)."""
    violation = (margin + positive - negatives).clamp(min=0).masked_fill(~is_negative, 0)
    return violation.topk(min(k, violation.shape[1]), dim=1).values.mean()


def embedding_loss(image_emb, text_emb, image_ids, text_ids, margin=0.05, k=10,
                   weights=(1.5, 1.0, 0.05)):
    """image_emb [B] rows with image ids `image_ids`; text_emb [2B] with `text_ids`; caption i
    belongs to image row i % B."""
    b = image_emb.shape[0]
    own = torch.arange(text_emb.shape[0]) % b
    d_ti = pdist(text_emb, image_emb)                                   # [2B, B]
    positive = d_ti.gather(1, own[:, None])                             # d(caption, its image)
    other_image = text_ids[:, None] != image_ids[None, :]
    text_to_image = top_violations(positive, d_ti, other_image, margin, k)
    # Each (caption, image) pair against the captions of other images, seen from the image.
    d_it = d_ti.T[own]                                                  # [2B, 2B]
    other_caption = text_ids[:, None] != text_ids[None, :]
    image_to_text = top_violations(positive, d_it, other_caption, margin, k)
    # Structure: the farthest caption of the same image against captions of other images.
    d_tt = pdist(text_emb, text_emb)
    farthest = d_tt.masked_fill(other_caption, float("-inf")).max(1, keepdim=True).values
    text_to_text = top_violations(farthest, d_tt, other_caption, margin, k)
    w_ti, w_it, w_tt = weights
    return w_ti * text_to_image + w_it * image_to_text + w_tt * text_to_text


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def embed(model, images, texts, chunk=4096):
    model.eval()
    im = torch.cat([model.embed_images(x) for x in images.split(chunk)])
    tx = torch.cat([model.embed_texts(x) for x in texts.split(chunk)])
    return im, tx


def ranks(image_emb, text_emb, caption_image):
    """1-based rank of the first relevant item, ties broken by gallery index, both ways.
    Scores are dot products: for unit vectors the order of the Euclidean distance."""
    s = text_emb @ image_emb.T                                          # [T, I]
    n_t, n_i = s.shape
    own = torch.from_numpy(caption_image)
    # text -> image: images ahead of the caption's image.
    p = s[torch.arange(n_t), own][:, None]
    ahead = (s > p) | ((s == p) & (torch.arange(n_i)[None, :] < own[:, None]))
    t2i = 1 + ahead.sum(1)
    # image -> text: captions ahead of the image's best caption (first index among ties).
    st = s.T                                                            # [I, T]
    relevant = own[None, :] == torch.arange(n_i)[:, None]
    best = st.masked_fill(~relevant, float("-inf")).argmax(1)           # first max index
    q = st.gather(1, best[:, None])
    ahead = (st > q) | ((st == q) & (torch.arange(n_t)[None, :] < best[:, None]))
    i2t = 1 + ahead.sum(1)
    return i2t, t2i


def recall_metrics(model, images, texts, view):
    image_rows, caption_rows, caption_image = view
    im, tx = embed(model, images[image_rows], texts[caption_rows])
    i2t, t2i = ranks(im, tx, caption_image)
    recall = lambda r: [100.0 * (r <= k).double().mean().item() for k in KS]
    out = {"image_to_text": recall(i2t), "text_to_image": recall(t2i)}
    out["rsum"] = sum(out["image_to_text"]) + sum(out["text_to_image"])
    return out


# ---------------------------------------------------------------- training

def train(args):
    started = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, texts, text_to_image, splits = load_dataset(args.data)
    views = {name: split_view(text_to_image, splits[name]) for name in ("train", "val", "test")}
    train_captions = views["train"][1]
    model = TwoBranch(images.shape[1], texts.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    t2i = torch.from_numpy(text_to_image)
    criterion = None
    if args.loss == "tandem":
        import tandem.losses
        import tandem.torch
        memory = tandem.losses.Memory(args.memory) if args.memory else None
        criterion = tandem.torch.Loss("paper", memory=memory)
    best = (-1.0, 0, None)
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for image_rows, caption_rows in epoch_batches(rng, train_captions, text_to_image,
                                                      args.batch_size):
            image_rows, caption_rows = torch.from_numpy(image_rows), torch.from_numpy(caption_rows)
            emb_images = model.embed_images(images[image_rows])
            emb_texts = model.embed_texts(texts[caption_rows])
            if criterion is None:
                loss = embedding_loss(emb_images, emb_texts, image_rows, t2i[caption_rows])
            else:
                # tandem's loss on the same embeddings: batch row of each caption's image,
                # dataset ids for the memory.
                row_of = torch.full((len(images),), -1, dtype=torch.int64)
                row_of[image_rows] = torch.arange(len(image_rows))
                loss = criterion(emb_images, emb_texts, row_of[t2i[caption_rows]],
                                 image_ids=image_rows, caption_ids=caption_rows)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        val = recall_metrics(model, images, texts, views["val"])
        print(f"epoch {epoch:2d}  loss {np.mean(losses):.4f}  val rsum {val['rsum']:.1f}",
              file=sys.stderr, flush=True)
        if val["rsum"] > best[0]:
            best = (val["rsum"], epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    test = recall_metrics(model, images, texts, views["test"])
    name = "pytorch-reference" if criterion is None else f"pytorch+tandem-loss(memory {args.memory})"
    return {"implementation": name, "seed": args.seed, "best_epoch": best[1],
            "val_rsum": best[0], **test, "wall_s": time.time() - started}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="tandem dataset folder (with splits.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--loss", choices=["reference", "tandem"], default="reference",
                   help="this file's loss, or tandem's through tandem.torch.Loss('paper') "
                        "(pip install ./crates/tandem-py)")
    p.add_argument("--memory", type=int, default=0,
                   help="with --loss tandem: a cross-batch memory of this many rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    r = train(args)
    if args.json:
        print(json.dumps(r))
    else:
        fmt = lambda v: " ".join(f"{x:.1f}" for x in v)
        print(f"test  i2t R@1/5/10 {fmt(r['image_to_text'])}  t2i R@1/5/10 "
              f"{fmt(r['text_to_image'])}  rsum {r['rsum']:.1f}  (best epoch {r['best_epoch']}, "
              f"{r['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
