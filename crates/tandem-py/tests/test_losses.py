"""The losses from Python against independent implementations: numpy loops (values, and
gradients by central differences in float64) and, when PyTorch is installed, PyTorch with
autograd through tandem.torch.Loss."""

import numpy as np
import pytest

import tandem
import tandem.losses

EPS = 1e-4  # inside the Euclidean distance's square root, as the library


def batch(n=7, per_image=(1, 2, 3), d=5, seed=0):
    """Unit-length embeddings; images have 1 to 3 captions each."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, d))
    counts = [per_image[i % len(per_image)] for i in range(n)]
    t2i = np.repeat(np.arange(n), counts)
    texts = images[t2i] + 0.8 * rng.standard_normal((len(t2i), d))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit(images), unit(texts), t2i


def euclidean(a, b):
    return np.sqrt(((a - b) ** 2).sum() + EPS)


def hinge_rows(anchors, a_ids, refs, r_ids, margin, k, same_set=False, farthest=False):
    """Top-k hinges of every (anchor, positive) row, kept values only."""
    kept = []
    for a, anchor in enumerate(anchors):
        pos = [r for r in range(len(refs)) if r_ids[r] == a_ids[a] and not (same_set and r == a)]
        neg = [r for r in range(len(refs)) if r_ids[r] != a_ids[a]]
        if farthest and pos:
            pos = [max(pos, key=lambda p: euclidean(anchor, refs[p]))]
        for p in pos:
            dp = euclidean(anchor, refs[p])
            h = sorted((max(0.0, margin + dp - euclidean(anchor, refs[n])) for n in neg), reverse=True)
            kept.extend(h[:k])
    return kept


def paper_reference(images, texts, t2i, margin=0.05, k=10, weights=(1.5, 1.0, 0.05)):
    img_ids = np.arange(len(images))
    mean = lambda v: sum(v) / max(len(v), 1)
    return (
        weights[0] * mean(hinge_rows(texts, t2i, images, img_ids, margin, k))
        + weights[1] * mean(hinge_rows(images, img_ids, texts, t2i, margin, k))
        + weights[2] * mean(hinge_rows(texts, t2i, texts, t2i, margin, k, same_set=True, farthest=True))
    )


def info_nce_reference(images, texts, t2i, temperature=0.07):
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    img_ids = np.arange(len(images))

    def direction(anchors, a_ids, refs, r_ids):
        losses = []
        for a, anchor in enumerate(anchors):
            neg = [np.exp(cos(anchor, refs[n]) / temperature) for n in range(len(refs)) if r_ids[n] != a_ids[a]]
            for p in (r for r in range(len(refs)) if r_ids[r] == a_ids[a]):
                lp = np.exp(cos(anchor, refs[p]) / temperature)
                losses.append(-np.log(lp / (lp + sum(neg))))
        return np.mean(losses)

    return (direction(texts, t2i, images, img_ids) + direction(images, img_ids, texts, t2i)) / 2


def numeric_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


@pytest.mark.parametrize(
    "name, reference, params",
    [
        ("paper", paper_reference, {}),
        ("paper", lambda i, t, m: paper_reference(i, t, m, margin=0.3, k=3), {"margin": 0.3, "top_k": 3}),
        ("info_nce", info_nce_reference, {}),
        ("info_nce", lambda i, t, m: info_nce_reference(i, t, m, temperature=0.5), {"temperature": 0.5}),
    ],
)
def test_values_and_gradients_match_independent_loops(name, reference, params):
    for seed in range(3):
        images, texts, t2i = batch(seed=seed)
        value, grad_images, grad_texts = tandem.losses.loss(
            name, images.astype(np.float32), texts.astype(np.float32), t2i, **params
        )
        # The library computes in float32 from float32 inputs; the loops in float64 from the
        # same (rounded) values.
        i32, t32 = images.astype(np.float32).astype(np.float64), texts.astype(np.float32).astype(np.float64)
        expected = reference(i32, t32, t2i)
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert grad_images.dtype == np.float32 and grad_images.shape == images.shape
        np.testing.assert_allclose(
            grad_images, numeric_gradient(lambda x: reference(x, t32, t2i), i32), atol=2e-4, rtol=1e-3
        )
        np.testing.assert_allclose(
            grad_texts, numeric_gradient(lambda x: reference(i32, x, t2i), t32), atol=2e-4, rtol=1e-3
        )


def test_named_functions_and_every_kind_run():
    images, texts, t2i = batch()
    assert tandem.losses.paper(images, texts, t2i)[0] == tandem.losses.loss("paper", images, texts, t2i)[0]
    for kind in tandem.losses.KINDS:
        value, gi, gt = tandem.losses.loss(kind, images, texts, t2i)
        assert np.isfinite(value) and np.isfinite(gi).all() and np.isfinite(gt).all()


def test_memory_adds_the_previous_batches_as_references():
    images, texts, t2i = batch(n=6, seed=1)
    later_images, later_texts, _ = batch(n=6, seed=2)
    memory = tandem.losses.Memory(100)
    ids, caption_ids = np.arange(6), np.arange(len(t2i))
    f32 = lambda x: x.astype(np.float32).astype(np.float64)
    first = tandem.losses.paper(
        f32(images), f32(texts), t2i, memory=memory, image_ids=ids, caption_ids=caption_ids
    )[0]
    assert first == pytest.approx(paper_reference(f32(images), f32(texts), t2i), rel=1e-5)
    assert len(memory) == len(t2i)
    value = tandem.losses.paper(
        f32(later_images), f32(later_texts), t2i,
        memory=memory, image_ids=ids + 6, caption_ids=caption_ids + 100,
    )[0]
    # The reference: every term ranks the new batch against its own rows and the remembered
    # ones (ids 0..5), anchors from the new batch only.
    refs_i = np.vstack([f32(later_images), f32(images)])
    refs_t = np.vstack([f32(later_texts), f32(texts)])
    ids_i = np.concatenate([ids + 6, ids])
    ids_t = np.concatenate([t2i + 6, t2i])
    mean = lambda v: sum(v) / len(v)
    expected = (
        1.5 * mean(hinge_rows(f32(later_texts), t2i + 6, refs_i, ids_i, 0.05, 10))
        + 1.0 * mean(hinge_rows(f32(later_images), ids + 6, refs_t, ids_t, 0.05, 10))
        + 0.05 * mean(hinge_rows(f32(later_texts), t2i + 6, refs_t, ids_t, 0.05, 10, same_set=True, farthest=True))
    )
    assert value == pytest.approx(expected, rel=1e-5)
    assert value != pytest.approx(tandem.losses.paper(later_images, later_texts, t2i)[0], rel=1e-3)
    with pytest.raises(ValueError, match="image_ids and caption_ids"):
        tandem.losses.paper(images, texts, t2i, memory=memory)


def test_bad_batches_are_value_errors():
    images, texts, t2i = batch()
    with pytest.raises(ValueError, match="text_to_image holds 7; each must be in 0..7"):
        tandem.losses.paper(images, texts, np.where(t2i == 6, 7, t2i))
    with pytest.raises(ValueError, match="text_to_image has 3 entries"):
        tandem.losses.paper(images, texts, t2i[:3])
    with pytest.raises(ValueError, match="both must be embeddings of one space"):
        tandem.losses.paper(images, texts[:, :3], t2i)
    with pytest.raises(ValueError, match="unknown key `loss.marginn`"):
        tandem.losses.paper(images, texts, t2i, marginn=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        tandem.losses.paper(images * np.nan, texts, t2i)


torch = pytest.importorskip("torch") if __import__("importlib").util.find_spec("torch") else None


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed (an optional dependency)")
def test_torch_loss_equals_an_independent_pytorch_implementation():
    import tandem.torch as tt

    def paper_torch(images, texts, t2i, margin=0.05, k=10, weights=(1.5, 1.0, 0.05)):
        def dist(a, b):
            return torch.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) + EPS)

        img_ids = torch.arange(len(images))

        def term(anchors, a_ids, refs, r_ids, same_set=False, farthest=False):
            d = dist(anchors, refs)
            same = a_ids[:, None] == r_ids[None, :]
            kept = []
            for a in range(len(anchors)):
                pos = [r for r in range(len(refs)) if same[a, r] and not (same_set and r == a)]
                if farthest and pos:
                    pos = [max(pos, key=lambda p: d[a, p].item())]
                neg = d[a][~same[a]]
                for p in pos:
                    h = torch.clamp(margin + d[a, p] - neg, min=0)
                    kept.append(torch.topk(h, min(k, len(h))).values)
            return torch.cat(kept).mean() if kept else d.sum() * 0

        return (
            weights[0] * term(texts, t2i, images, img_ids)
            + weights[1] * term(images, img_ids, texts, t2i)
            + weights[2] * term(texts, t2i, texts, t2i, same_set=True, farthest=True)
        )

    def info_nce_torch(images, texts, t2i, temperature=0.07):
        img_ids = torch.arange(len(images))
        sim = torch.nn.functional.normalize(texts, dim=1) @ torch.nn.functional.normalize(images, dim=1).T / temperature

        def direction(s, a_ids, r_ids):
            same = a_ids[:, None] == r_ids[None, :]
            neg = torch.logsumexp(s.masked_fill(same, -float("inf")), dim=1, keepdim=True)
            rows = torch.nonzero(same)
            lp = s[rows[:, 0], rows[:, 1]]
            return (-(lp - torch.logaddexp(lp, neg[rows[:, 0], 0]))).mean()

        return (direction(sim, t2i, img_ids) + direction(sim.T, img_ids, t2i)) / 2

    for seed in range(3):
        images, texts, t2i = batch(n=12, seed=seed)
        for kind, reference in (("paper", paper_torch), ("info_nce", info_nce_torch)):
            ours = [torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (images, texts)]
            value = tt.Loss(kind)(ours[0], ours[1], torch.tensor(t2i))
            value.backward()
            theirs = [torch.tensor(x, dtype=torch.float32).double().requires_grad_() for x in (images, texts)]
            expected = reference(theirs[0], theirs[1], torch.tensor(t2i))
            expected.backward()
            assert value.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-6), kind
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-5, rtol=1e-4)
