"""tandem from a notebook: train on the bundled demo data, evaluate, plot Recall@K both ways,
search in the learned space, and put tandem's paper loss into a PyTorch model when torch is
installed.

    python examples/python/demo.py [--epochs 20] [--out runs/py-demo]

Run as a script by CI (crates/tandem-py/test.sh, with fewer epochs); each block is a notebook
cell.
"""

import argparse
import pathlib

import tandem

ROOT = pathlib.Path(__file__).resolve().parents[2]

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "py-demo")
args = parser.parse_args()

# The data: 1,906 emoji pictures, 6,940 captions, EfficientNet-Lite0 and MiniLM features.
data = tandem.Dataset.load(ROOT / "data" / "emoji")
print(data)

# Train the reference recipe (Wang, Li & Lazebnik 2016) with a validation log per epoch.
history = []
run = tandem.train(
    data,
    args.out / "run",
    overwrite=True,
    callback=lambda e: history.append(e["val"]["rsum"]) if e["kind"] == "epoch" else None,
    train__epochs=args.epochs,
)
print(f"best epoch {run['best_epoch']}: validation rsum {run['best_val']['rsum']:.1f}")

# Evaluate the best checkpoint on the test split, with Recall@K for K up to 100.
model = tandem.load(args.out / "run")
ks = [1, 2, 3, 5, 10, 20, 30, 50, 75, 100]
metrics = tandem.evaluate(model, data, split="test", ks=ks)
print(f"test rsum {metrics['rsum']:.1f}")
curve = {r["k"]: r for r in metrics["recall_at"]}

# Plot the Recall@K curves (matplotlib, when installed).
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for direction, title in (("image_to_text", "image → text"), ("text_to_image", "text → image")):
        axes[0].plot(ks, [curve[k][direction] for k in ks], marker="o", label=title)
    axes[0].set(xscale="log", xlabel="K", ylabel="Recall@K (%)", title="test split")
    axes[0].legend()
    axes[1].plot(range(1, len(history) + 1), history, marker=".")
    axes[1].set(xlabel="epoch", ylabel="validation rsum", title="training")
    figure.tight_layout()
    figure.savefig(args.out / "recall.png", dpi=120)
    print(f"plot: {args.out / 'recall.png'}")

# Search: the pictures for three captions, and the captions for a picture.
index = tandem.Index.build(model, data)
captions = data.captions
ids, scores = index.search(text_ids=[0, 100, 200], k=3)
for q, (row, score) in enumerate(zip(ids, scores)):
    query = captions[[0, 100, 200][q]]
    print(f"{query!r} → images {row.tolist()} (scores {', '.join(f'{x:.3f}' for x in score)})")
ids, _ = index.search(image_ids=[7], k=3)
print(f"image 7 → {[captions[i] for i in ids[0]]}")

# The same loss inside a PyTorch model (when torch is installed).
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    import tandem.losses
    import tandem.torch

    torch.manual_seed(0)
    image_branch = torch.nn.Linear(data.image_dim, 128)
    text_branch = torch.nn.Linear(data.text_dim, 128)
    optimizer = torch.optim.Adam([*image_branch.parameters(), *text_branch.parameters()], lr=1e-3)
    criterion = tandem.torch.Loss("paper", memory=tandem.losses.Memory(500))
    images = torch.from_numpy(data.images)
    texts = torch.from_numpy(data.texts)
    t2i = torch.from_numpy(data.text_to_image)
    train_images = torch.tensor(data.splits["train"])
    for step in range(50):
        batch = train_images[torch.randperm(len(train_images))[:250]]
        captions_of = torch.nonzero(torch.isin(t2i, batch)).flatten()
        row_of = {int(i): r for r, i in enumerate(batch)}
        rows = torch.tensor([row_of[int(t2i[c])] for c in captions_of])
        emb_i = torch.nn.functional.normalize(image_branch(images[batch]), dim=1)
        emb_t = torch.nn.functional.normalize(text_branch(texts[captions_of]), dim=1)
        loss = criterion(emb_i, emb_t, rows, image_ids=batch, caption_ids=captions_of)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"PyTorch linear branches, 50 steps with tandem.torch.Loss('paper') + memory: loss {loss.item():.4f}")
