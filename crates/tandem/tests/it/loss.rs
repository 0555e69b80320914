//! The paper's objective against a naive loop over its tuples, and its gradient against
//! central finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use tandem::config::{LossConfig, LossKind};
use tandem::loss::{Distance, Embedded, Objective};

/// One term, computed tuple by tuple: for each (anchor, positive) row, the hinges against every
/// negative, the `k` largest kept (all when `k` is `None`); returns the kept values.
#[allow(clippy::too_many_arguments)]
fn naive_term(
    anchors: &[Vec<f64>],
    anchor_ids: &[u32],
    refs: &[Vec<f64>],
    ref_ids: &[u32],
    same_set: bool,
    farthest: bool,
    k: Option<usize>,
    margin: f64,
    d: Distance,
) -> Vec<f64> {
    let mut kept = Vec::new();
    for (a, anchor) in anchors.iter().enumerate() {
        let positives: Vec<usize> = (0..refs.len())
            .filter(|&r| ref_ids[r] == anchor_ids[a] && !(same_set && r == a))
            .collect();
        let rows: Vec<usize> = if farthest {
            positives
                .iter()
                .copied()
                .fold(None::<usize>, |best, p| match best {
                    Some(b) if d.naive(anchor, &refs[b]) >= d.naive(anchor, &refs[p]) => Some(b),
                    _ => Some(p),
                })
                .into_iter()
                .collect()
        } else {
            positives
        };
        for p in rows {
            let dp = d.naive(anchor, &refs[p]);
            let mut hinges: Vec<f64> = (0..refs.len())
                .filter(|&n| ref_ids[n] != anchor_ids[a])
                .map(|n| (margin + dp - d.naive(anchor, &refs[n])).max(0.0))
                .collect();
            hinges.sort_by(|x, y| y.total_cmp(x));
            kept.extend(hinges.into_iter().take(k.unwrap_or(usize::MAX)));
        }
    }
    kept
}

fn mean(v: Vec<f64>) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn naive_objective(
    images: &[Vec<f64>],
    texts: &[Vec<f64>],
    text_ids: &[u32],
    cfg: &LossConfig,
) -> f64 {
    let image_ids: Vec<u32> = (0..images.len() as u32).collect();
    let (m, d) = (cfg.margin, cfg.distance);
    let t2i = |k| naive_term(texts, text_ids, images, &image_ids, false, false, k, m, d);
    let i2t = |k| naive_term(images, &image_ids, texts, text_ids, false, false, k, m, d);
    match cfg.kind {
        LossKind::Paper => {
            let k = Some(cfg.top_k);
            cfg.text_to_image * mean(t2i(k))
                + cfg.image_to_text * mean(i2t(k))
                + cfg.text_to_text
                    * mean(naive_term(
                        texts, text_ids, texts, text_ids, true, true, k, m, d,
                    ))
        }
        LossKind::VseSum | LossKind::VseWarmup => {
            t2i(None).iter().sum::<f64>() + i2t(None).iter().sum::<f64>()
        }
        LossKind::VseMax => t2i(Some(1)).iter().sum::<f64>() + i2t(Some(1)).iter().sum::<f64>(),
    }
}

/// A random batch: `n_images` images, each with 1..=3 captions.
fn batch() -> impl Strategy<Value = (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<u32>)> {
    (2usize..6, 2usize..5).prop_flat_map(|(n_images, dim)| {
        (
            proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, dim), n_images),
            proptest::collection::vec(1usize..4, n_images),
        )
            .prop_flat_map(move |(images, counts)| {
                let text_ids: Vec<u32> = counts
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &c)| std::iter::repeat_n(i as u32, c))
                    .collect();
                let n_texts = text_ids.len();
                (
                    Just(images),
                    proptest::collection::vec(
                        proptest::collection::vec(-1.0f64..1.0, dim),
                        n_texts,
                    ),
                    Just(text_ids),
                )
            })
    })
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let dim = rows[0].len();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu).unwrap()
}

fn config(kind: LossKind, top_k: usize, distance: Distance) -> LossConfig {
    LossConfig {
        kind,
        top_k,
        distance,
        margin: 0.3,
        ..LossConfig::default()
    }
}

fn loss_of(images: &Tensor, texts: &Tensor, text_ids: &[u32], cfg: &LossConfig) -> Tensor {
    let image_ids: Vec<u32> = (0..images.dim(0).unwrap() as u32).collect();
    Objective::for_epoch(cfg, 0)
        .forward(&Embedded {
            images,
            texts,
            image_ids: &image_ids,
            text_ids,
        })
        .unwrap()
        .total
}

fn kind() -> impl Strategy<Value = LossKind> {
    prop_oneof![
        Just(LossKind::Paper),
        Just(LossKind::VseSum),
        Just(LossKind::VseMax)
    ]
}

fn distance() -> impl Strategy<Value = Distance> {
    prop_oneof![
        Just(Distance::Euclidean),
        Just(Distance::Cosine),
        Just(Distance::Dot)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn objective_equals_naive_loop((images, texts, ids) in batch(), kind in kind(), k in 1usize..12, d in distance()) {
        let cfg = config(kind, k, d);
        let got: f64 = loss_of(&tensor(&images), &tensor(&texts), &ids, &cfg).to_scalar().unwrap();
        let expected = naive_objective(&images, &texts, &ids, &cfg);
        prop_assert!((got - expected).abs() <= 1e-9 * (1.0 + expected.abs()), "got {got}, naive {expected}");
    }

    #[test]
    fn gradient_matches_finite_differences((images, texts, ids) in batch(), kind in kind(), k in 1usize..12, d in distance()) {
        let cfg = config(kind, k, d);
        let vi = Var::from_tensor(&tensor(&images)).unwrap();
        let vt = Var::from_tensor(&tensor(&texts)).unwrap();
        let grads = loss_of(vi.as_tensor(), vt.as_tensor(), &ids, &cfg).backward().unwrap();
        let h = 1e-6;
        for (rows, var, is_image) in [(&images, &vi, true), (&texts, &vt, false)] {
            let analytic: Vec<Vec<f64>> = match grads.get(var.as_tensor()) {
                Some(g) => g.to_vec2().unwrap(),
                None => vec![vec![0.0; rows[0].len()]; rows.len()],
            };
            for r in 0..rows.len() {
                for c in 0..rows[0].len() {
                    let eval = |delta: f64| {
                        let mut moved = rows.clone();
                        moved[r][c] += delta;
                        let (i, t) = if is_image { (&moved, &texts) } else { (&images, &moved) };
                        naive_objective(i, t, &ids, &cfg)
                    };
                    let numeric = (eval(h) - eval(-h)) / (2.0 * h);
                    prop_assert!(
                        (numeric - analytic[r][c]).abs() <= 1e-5 * (1.0 + numeric.abs()),
                        "d/d{}[{r}][{c}]: analytic {}, numeric {numeric}",
                        if is_image { "image" } else { "text" }, analytic[r][c]
                    );
                }
            }
        }
    }
}

#[test]
fn hand_computed_two_pair_batch() {
    // Images e1, e2; one caption each, equal to its image. Euclidean distances (with the 1e-4
    // under the root): d(pos) = 0.01, d(neg) = sqrt(2 + 1e-4). Margin 2: every hinge is
    // 2 + 0.01 - sqrt(2.0001); the text→text term has no second caption, so no rows.
    let e = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    let cfg = LossConfig {
        margin: 2.0,
        ..LossConfig::default()
    };
    let got: f64 = loss_of(&tensor(&e), &tensor(&e), &[0, 1], &cfg)
        .to_scalar()
        .unwrap();
    let hinge = 2.0 + 0.01 - 2.0001f64.sqrt();
    assert!((got - 2.5 * hinge).abs() < 1e-12, "{got}");
}

#[test]
fn another_caption_of_the_same_image_is_never_a_negative() {
    // Two captions of image 0 far apart, image 1 far from both: with only same-image captions
    // far away, text→image and image→text see no violation from them.
    let images = vec![vec![1.0, 0.0], vec![-1.0, 0.0]];
    let texts = vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![-1.0, 0.0]];
    let cfg = LossConfig {
        margin: 0.1,
        text_to_text: 0.0,
        ..LossConfig::default()
    };
    let got: f64 = loss_of(&tensor(&images), &tensor(&texts), &[0, 0, 1], &cfg)
        .to_scalar()
        .unwrap();
    assert_eq!(got, 0.0);
}

#[test]
fn vse_hand_computed() {
    // Cosine, margin 0.2. Image 0 = (1, 0), image 1 = (0, 1); caption 0 = (1, 0) of image 0,
    // caption 1 = (0.6, 0.8) of image 1. cos: c0·i0 = 1, c0·i1 = 0, c1·i0 = 0.6, c1·i1 = 0.8.
    // t2i: c0: 0.2 - 1 + 0 < 0; c1: 0.2 - 0.8 + 0.6 = 0. i2t: i0 (pos c0): 0.2 - 1 + 0.6 < 0;
    // i1 (pos c1): 0.2 - 0.8 + 0 < 0. Everything is 0 — move caption 1 to (0.8, 0.6):
    // c1·i0 = 0.8, c1·i1 = 0.6 → t2i c1: 0.2 - 0.6 + 0.8 = 0.4; i2t i0: 0.2 - 1 + 0.8 = 0.0;
    // i1 (pos c1 0.6, neg c0 0): 0.2 - 0.6 + 0 < 0. Sum = 0.4, max-violation also 0.4.
    let images = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    let texts = vec![vec![1.0, 0.0], vec![0.8, 0.6]];
    for kind in [LossKind::VseSum, LossKind::VseMax] {
        let cfg = LossConfig {
            kind,
            margin: 0.2,
            distance: Distance::Cosine,
            ..LossConfig::default()
        };
        let got: f64 = loss_of(&tensor(&images), &tensor(&texts), &[0, 1], &cfg)
            .to_scalar()
            .unwrap();
        assert!((got - 0.4).abs() < 1e-12, "{kind:?}: {got}");
    }
}

#[test]
fn f32_and_f64_agree() {
    let images = vec![
        vec![0.3, -0.2, 0.9],
        vec![0.1, 0.8, -0.4],
        vec![-0.7, 0.1, 0.2],
    ];
    let texts = vec![
        vec![0.2, -0.1, 0.8],
        vec![0.5, 0.5, 0.1],
        vec![-0.6, 0.3, 0.1],
        vec![0.0, 0.9, -0.3],
    ];
    let ids = [0, 1, 2, 1];
    let cfg = config(LossKind::Paper, 2, Distance::Euclidean);
    let f64v: f64 = loss_of(&tensor(&images), &tensor(&texts), &ids, &cfg)
        .to_scalar()
        .unwrap();
    let f32v: f32 = loss_of(
        &tensor(&images).to_dtype(DType::F32).unwrap(),
        &tensor(&texts).to_dtype(DType::F32).unwrap(),
        &ids,
        &cfg,
    )
    .to_scalar()
    .unwrap();
    assert!((f64::from(f32v) - f64v).abs() < 1e-5 * (1.0 + f64v.abs()));
}
