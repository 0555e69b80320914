//! Every objective against a naive loop over its tuples (with and without the cross-batch
//! memory), its gradient against central finite differences in f64, and values at fixed inputs
//! against PyTorch.

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use tandem::config::{LossConfig, LossKind, MemoryConfig};
use tandem::loss::{Distance, Embedded, Memory, Miner, Objective, Reducer, Temperature};

/// The references of one modality: the batch's rows then the memory's, with image ids and
/// sample keys.
#[derive(Debug, Clone)]
struct Side {
    rows: Vec<Vec<f64>>,
    ids: Vec<u32>,
    keys: Vec<u32>,
}

impl Side {
    fn then(&self, memory: &Side) -> Side {
        let mut out = self.clone();
        out.rows.extend(memory.rows.iter().cloned());
        out.ids.extend(&memory.ids);
        out.keys.extend(&memory.keys);
        out
    }
}

/// A batch and a memory, with the temperature of the softmax and sigmoid losses.
#[derive(Debug, Clone)]
struct Case {
    images: Side,
    texts: Side,
    memory_images: Side,
    memory_texts: Side,
    log_scale: f64,
    bias: f64,
}

/// Positives of anchor `a`: same image id, not the anchor itself (same sample key).
fn positives(anchors: &Side, a: usize, refs: &Side, same_set: bool) -> Vec<usize> {
    (0..refs.rows.len())
        .filter(|&r| {
            refs.ids[r] == anchors.ids[a] && !(same_set && refs.keys[r] == anchors.keys[a])
        })
        .collect()
}

fn negatives(anchors: &Side, a: usize, refs: &Side) -> Vec<usize> {
    (0..refs.rows.len())
        .filter(|&r| refs.ids[r] != anchors.ids[a])
        .collect()
}

/// One hinge term, tuple by tuple: for each (anchor, positive) row, the hinges against every
/// negative, mined; returns the kept values.
fn naive_hinge(
    anchors: &Side,
    refs: &Side,
    same_set: bool,
    farthest: bool,
    miner: Miner,
    margin: f64,
    d: Distance,
) -> Vec<f64> {
    let mut kept = Vec::new();
    for (a, anchor) in anchors.rows.iter().enumerate() {
        let positives = positives(anchors, a, refs, same_set);
        let rows: Vec<usize> = if farthest {
            positives
                .iter()
                .copied()
                .fold(None::<usize>, |best, p| match best {
                    Some(b) if d.naive(anchor, &refs.rows[b]) >= d.naive(anchor, &refs.rows[p]) => {
                        Some(b)
                    }
                    _ => Some(p),
                })
                .into_iter()
                .collect()
        } else {
            positives
        };
        for p in rows {
            let dp = d.naive(anchor, &refs.rows[p]);
            let mut hinges: Vec<f64> = negatives(anchors, a, refs)
                .into_iter()
                .map(|n| (margin + dp - d.naive(anchor, &refs.rows[n])).max(0.0))
                .collect();
            hinges.sort_by(|x, y| y.total_cmp(x));
            match miner {
                Miner::All => kept.extend(hinges),
                Miner::TopK(k) => kept.extend(hinges.into_iter().take(k)),
                Miner::Hardest => kept.extend(hinges.into_iter().take(1)),
                Miner::SemiHard => {
                    kept.extend(hinges.into_iter().filter(|&h| h > 0.0 && h < margin))
                }
            }
        }
    }
    kept
}

/// Whether some hinge `margin + d(a,p) - d(a,n)` of the hinge terms lies within rounding of
/// a semi-hard boundary (0 or the margin), where the selection legitimately depends on the
/// last bit.
fn near_semi_hard_boundary(case: &Case, cfg: &LossConfig) -> bool {
    let image_refs = case.images.then(&case.memory_images);
    let text_refs = case.texts.then(&case.memory_texts);
    let pairs = [
        (&case.texts, &image_refs, false),
        (&case.images, &text_refs, false),
        (&case.texts, &text_refs, true),
    ];
    pairs.into_iter().any(|(anchors, refs, same_set)| {
        (0..anchors.rows.len()).any(|a| {
            positives(anchors, a, refs, same_set).into_iter().any(|p| {
                let dp = cfg.distance.naive(&anchors.rows[a], &refs.rows[p]);
                negatives(anchors, a, refs).into_iter().any(|n| {
                    let h = cfg.margin + dp - cfg.distance.naive(&anchors.rows[a], &refs.rows[n]);
                    h.abs() < 1e-9 || (h - cfg.margin).abs() < 1e-9
                })
            })
        })
    })
}

fn similarity(d: Distance, a: &[f64], b: &[f64]) -> f64 {
    let offset = if d == Distance::Cosine { 1.0 } else { 0.0 };
    offset - d.naive(a, b)
}

/// InfoNCE of one direction: per (anchor, positive), `-log(e^{s·p} / (e^{s·p} + Σ_n e^{s·n}))`,
/// mean over rows.
fn naive_softmax(anchors: &Side, refs: &Side, scale: f64, d: Distance) -> f64 {
    let mut losses = Vec::new();
    for (a, anchor) in anchors.rows.iter().enumerate() {
        let negs: Vec<f64> = negatives(anchors, a, refs)
            .into_iter()
            .map(|n| scale * similarity(d, anchor, &refs.rows[n]))
            .collect();
        for p in positives(anchors, a, refs, false) {
            let lp = scale * similarity(d, anchor, &refs.rows[p]);
            let denominator: f64 = lp.exp() + negs.iter().map(|l| l.exp()).sum::<f64>();
            losses.push(-(lp.exp() / denominator).ln());
        }
    }
    mean(losses)
}

/// SigLIP: `Σ_pairs -log σ(z (s·sim + b)) / anchors`.
fn naive_sigmoid(anchors: &Side, refs: &Side, scale: f64, bias: f64, d: Distance) -> f64 {
    let mut sum = 0.0;
    for (a, anchor) in anchors.rows.iter().enumerate() {
        for (r, reference) in refs.rows.iter().enumerate() {
            let z = if refs.ids[r] == anchors.ids[a] {
                1.0
            } else {
                -1.0
            };
            let x = z * (scale * similarity(d, anchor, reference) + bias);
            sum += -(1.0 / (1.0 + (-x).exp())).ln();
        }
    }
    sum / anchors.rows.len() as f64
}

fn mean(v: Vec<f64>) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The objective of `cfg`, from the naive terms, on the batch plus memory references.
fn naive_objective(case: &Case, cfg: &LossConfig) -> f64 {
    let (m, d) = (cfg.margin, cfg.distance);
    let (images, texts) = (&case.images, &case.texts);
    let image_refs = images.then(&case.memory_images);
    let text_refs = texts.then(&case.memory_texts);
    let scale = case.log_scale.exp();
    let similarity_distance = if d == Distance::Euclidean {
        Distance::Cosine
    } else {
        d
    };
    let sum = |v: Vec<f64>| v.iter().sum::<f64>();
    let hinge_total = |miner: Miner, reduce: &dyn Fn(Vec<f64>) -> f64, weights: [f64; 3]| {
        let miner = cfg.miner.unwrap_or(miner);
        let reduce = |v: Vec<f64>| match cfg.reducer {
            Some(r) => r.naive(&v),
            None => reduce(v),
        };
        weights[0] * reduce(naive_hinge(texts, &image_refs, false, false, miner, m, d))
            + weights[1] * reduce(naive_hinge(images, &text_refs, false, false, miner, m, d))
            + if weights[2] > 0.0 {
                weights[2] * reduce(naive_hinge(texts, &text_refs, true, true, miner, m, d))
            } else {
                0.0
            }
    };
    match cfg.kind {
        LossKind::Paper => hinge_total(
            Miner::TopK(cfg.top_k),
            &mean,
            [cfg.text_to_image, cfg.image_to_text, cfg.text_to_text],
        ),
        LossKind::VseSum | LossKind::VseWarmup => hinge_total(Miner::All, &sum, [1.0, 1.0, 0.0]),
        LossKind::VseMax => hinge_total(Miner::Hardest, &sum, [1.0, 1.0, 0.0]),
        LossKind::InfoNce => {
            0.5 * naive_softmax(texts, &image_refs, scale, similarity_distance)
                + 0.5 * naive_softmax(images, &text_refs, scale, similarity_distance)
        }
        LossKind::Siglip => {
            naive_sigmoid(images, &text_refs, scale, case.bias, similarity_distance)
        }
    }
}

fn rows(
    dim: usize,
    n: impl Into<proptest::sample::SizeRange>,
) -> impl Strategy<Value = Vec<Vec<f64>>> {
    proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, dim), n)
}

/// A random batch: 2..6 images each with 1..=3 captions, and a memory of 0..4 images and
/// 0..5 captions whose ids may be batch images or others, and whose caption keys may repeat a
/// batch caption (the same sample seen in an earlier batch).
fn case() -> impl Strategy<Value = Case> {
    (2usize..6, 2usize..5).prop_flat_map(|(n_images, dim)| {
        (
            rows(dim, n_images),
            proptest::collection::vec(1usize..4, n_images),
            rows(dim, 0..4),
            rows(dim, 0..5),
            0.0f64..3.0,
            -3.0f64..3.0,
        )
            .prop_flat_map(
                move |(images, counts, memory_images, memory_texts, log_scale, bias)| {
                    let text_ids: Vec<u32> = counts
                        .iter()
                        .enumerate()
                        .flat_map(|(i, &c)| std::iter::repeat_n(i as u32, c))
                        .collect();
                    let n_texts = text_ids.len();
                    let (n_mi, n_mt) = (memory_images.len(), memory_texts.len());
                    (
                        Just((
                            images,
                            text_ids,
                            memory_images,
                            memory_texts,
                            log_scale,
                            bias,
                        )),
                        rows(dim, n_texts),
                        proptest::collection::vec(0..n_images as u32 + 2, n_mi),
                        proptest::collection::vec(0..n_texts as u32 + 3, n_mt),
                    )
                },
            )
            .prop_map(
                |(
                    (images, text_ids, memory_images, memory_texts, log_scale, bias),
                    texts,
                    mi_ids,
                    mt_keys,
                )| {
                    let n_images = images.len() as u32;
                    // The memory keeps f32 rows; the naive loop sees the same values.
                    let f32_rows = |rows: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
                        rows.into_iter()
                            .map(|r| r.into_iter().map(|x| f64::from(x as f32)).collect())
                            .collect()
                    };
                    let (memory_images, memory_texts) =
                        (f32_rows(memory_images), f32_rows(memory_texts));
                    // A memory caption's image: its key's image when the key is a batch caption.
                    let mt_ids = mt_keys
                        .iter()
                        .map(|&k| {
                            text_ids
                                .get(k as usize)
                                .copied()
                                .unwrap_or(n_images + k % 2)
                        })
                        .collect();
                    Case {
                        images: Side {
                            ids: (0..n_images).collect(),
                            keys: (0..n_images).collect(),
                            rows: images,
                        },
                        texts: Side {
                            keys: (0..text_ids.len() as u32).collect(),
                            ids: text_ids,
                            rows: texts,
                        },
                        memory_images: Side {
                            keys: mi_ids.clone(),
                            ids: mi_ids,
                            rows: memory_images,
                        },
                        memory_texts: Side {
                            ids: mt_ids,
                            keys: mt_keys,
                            rows: memory_texts,
                        },
                        log_scale,
                        bias,
                    }
                },
            )
    })
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let dim = rows[0].len();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), dim), &Device::Cpu).unwrap()
}

fn memory_of(case: &Case, capacity: usize) -> Memory {
    let dim = case.images.rows[0].len();
    let mut memory = Memory::new(
        &MemoryConfig {
            enabled: true,
            capacity,
            warmup_steps: 0,
        },
        dim,
    );
    let side = |s: &Side| {
        if s.rows.is_empty() {
            Tensor::zeros((0, dim), DType::F64, &Device::Cpu).unwrap()
        } else {
            tensor(&s.rows)
        }
    };
    let (mi, mt) = (&case.memory_images, &case.memory_texts);
    memory
        .record(&side(mi), &mi.ids, &mi.keys, &side(mt), &mt.ids, &mt.keys)
        .unwrap();
    memory
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

/// The library's objective on `images`/`texts` (the case's batch rows, possibly moved) with the
/// case's memory and the given temperature.
fn loss_of(
    images: &Tensor,
    texts: &Tensor,
    case: &Case,
    memory: Option<&Memory>,
    temperature: &Temperature,
    cfg: &LossConfig,
) -> Tensor {
    let batch = Embedded::new(images, texts, &case.images.ids, &case.texts.ids)
        .with_keys(&case.images.keys, &case.texts.keys)
        .with_temperature(temperature);
    let batch = match memory {
        Some(m) => batch.with_memory(m),
        None => batch,
    };
    Objective::for_epoch(cfg, 0).forward(&batch).unwrap().total
}

fn temperature(log_scale: f64, bias: f64) -> Temperature {
    Temperature::with_values(log_scale, bias, true, 100f64.ln(), DType::F64, &Device::Cpu).unwrap()
}

fn kind() -> impl Strategy<Value = LossKind> {
    prop_oneof![
        Just(LossKind::Paper),
        Just(LossKind::VseSum),
        Just(LossKind::VseMax),
        Just(LossKind::InfoNce),
        Just(LossKind::Siglip),
    ]
}

fn distance() -> impl Strategy<Value = Distance> {
    prop_oneof![
        Just(Distance::Euclidean),
        Just(Distance::Cosine),
        Just(Distance::Dot)
    ]
}

/// No override, or a miner that replaces the kind's own.
fn miner_override() -> impl Strategy<Value = Option<Miner>> {
    prop_oneof![
        Just(None),
        Just(Some(Miner::SemiHard)),
        Just(Some(Miner::All)),
        (1usize..4).prop_map(|k| Some(Miner::TopK(k))),
    ]
}

fn reducer_override() -> impl Strategy<Value = Option<Reducer>> {
    prop_oneof![
        Just(None),
        Just(Some(Reducer::MeanNonZero)),
        Just(Some(Reducer::Sum))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every loss, with and without memory, equals the naive loop over its tuples on the
    /// concatenated (batch + memory) references.
    #[test]
    fn objective_equals_naive_loop(
        case in case(), kind in kind(), k in 1usize..12, d in distance(),
        miner in miner_override(), reducer in reducer_override(), with_memory in any::<bool>(),
    ) {
        let cfg = LossConfig { miner, reducer, ..config(kind, k, d) };
        prop_assume!(miner != Some(Miner::SemiHard) || !near_semi_hard_boundary(&case, &cfg));
        let memory = memory_of(&case, 64);
        let mut expected_case = case.clone();
        if !with_memory {
            expected_case.memory_images.rows.clear();
            expected_case.memory_images.ids.clear();
            expected_case.memory_images.keys.clear();
            expected_case.memory_texts = expected_case.memory_images.clone();
        }
        let t = temperature(case.log_scale, case.bias);
        let got: f64 = loss_of(
            &tensor(&case.images.rows), &tensor(&case.texts.rows), &case,
            with_memory.then_some(&memory), &t, &cfg,
        ).to_scalar().unwrap();
        let expected = naive_objective(&expected_case, &cfg);
        prop_assert!((got - expected).abs() <= 1e-9 * (1.0 + expected.abs()), "got {got}, naive {expected}");
    }

    /// A memory of capacity 0 gives exactly (bit for bit) the loss without memory.
    #[test]
    fn empty_memory_changes_nothing(case in case(), kind in kind(), d in distance()) {
        let cfg = config(kind, 3, d);
        let t = temperature(case.log_scale, case.bias);
        let (i, x) = (tensor(&case.images.rows), tensor(&case.texts.rows));
        let without: f64 = loss_of(&i, &x, &case, None, &t, &cfg).to_scalar().unwrap();
        let empty: f64 = loss_of(&i, &x, &case, Some(&memory_of(&case, 0)), &t, &cfg).to_scalar().unwrap();
        prop_assert_eq!(without.to_bits(), empty.to_bits());
    }

    /// Gradients with respect to the batch embeddings and the temperature and bias against
    /// central finite differences; memory rows are constants.
    #[test]
    fn gradient_matches_finite_differences(case in case(), kind in kind(), k in 1usize..12, d in distance()) {
        let cfg = config(kind, k, d);
        let memory = memory_of(&case, 64);
        let vi = Var::from_tensor(&tensor(&case.images.rows)).unwrap();
        let vt = Var::from_tensor(&tensor(&case.texts.rows)).unwrap();
        let t = temperature(case.log_scale, case.bias);
        let grads = loss_of(vi.as_tensor(), vt.as_tensor(), &case, Some(&memory), &t, &cfg)
            .backward()
            .unwrap();
        let h = 1e-6;
        let close = |numeric: f64, analytic: f64| (numeric - analytic).abs() <= 1e-5 * (1.0 + numeric.abs());
        // At a kink (a top-K or farthest-positive tie, coincident rows: the shrinking of a failure
        // drives cases there) the central difference averages two slopes; a subgradient must
        // then equal the slope of one side.
        let here = naive_objective(&case, &cfg);
        let one_sided = |up: f64, down: f64, analytic: f64| {
            let (right, left) = ((up - here) / h, (here - down) / h);
            let near = |slope: f64| (slope - analytic).abs() <= 1e-4 * (1.0 + slope.abs());
            (right - left).abs() > 1e-4 * (1.0 + right.abs()) && (near(right) || near(left))
        };
        for is_image in [true, false] {
            let rows = if is_image { &case.images.rows } else { &case.texts.rows };
            let var = if is_image { &vi } else { &vt };
            let analytic: Vec<Vec<f64>> = match grads.get(var.as_tensor()) {
                Some(g) => g.to_vec2().unwrap(),
                None => vec![vec![0.0; rows[0].len()]; rows.len()],
            };
            for (r, analytic_row) in analytic.iter().enumerate() {
                for (c, &analytic_value) in analytic_row.iter().enumerate() {
                    let eval = |delta: f64| {
                        let mut moved = case.clone();
                        let side = if is_image { &mut moved.images } else { &mut moved.texts };
                        side.rows[r][c] += delta;
                        naive_objective(&moved, &cfg)
                    };
                    let (up, down) = (eval(h), eval(-h));
                    let numeric = (up - down) / (2.0 * h);
                    prop_assert!(
                        close(numeric, analytic_value) || one_sided(up, down, analytic_value),
                        "d/d{}[{r}][{c}]: analytic {analytic_value}, numeric {numeric}",
                        if is_image { "image" } else { "text" }
                    );
                }
            }
        }
        for (name, var) in [("log_scale", &t.log_scale), ("bias", &t.bias)] {
            let analytic = grads
                .get(var.as_tensor())
                .map_or(0.0, |g| g.to_scalar::<f64>().unwrap());
            let eval = |delta: f64| {
                let mut moved = case.clone();
                if name == "bias" { moved.bias += delta } else { moved.log_scale += delta }
                naive_objective(&moved, &cfg)
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            prop_assert!(close(numeric, analytic), "d/d{name}: analytic {analytic}, numeric {numeric}");
        }
    }
}

/// The same objective on a batch without memory, keys or temperature (hinge losses only).
fn plain_loss(
    images: &[Vec<f64>],
    texts: &[Vec<f64>],
    text_ids: &[u32],
    cfg: &LossConfig,
) -> Tensor {
    let image_ids: Vec<u32> = (0..images.len() as u32).collect();
    Objective::for_epoch(cfg, 0)
        .forward(&Embedded::new(
            &tensor(images),
            &tensor(texts),
            &image_ids,
            text_ids,
        ))
        .unwrap()
        .total
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
    let got: f64 = plain_loss(&e, &e, &[0, 1], &cfg).to_scalar().unwrap();
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
    let got: f64 = plain_loss(&images, &texts, &[0, 0, 1], &cfg)
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
        let got: f64 = plain_loss(&images, &texts, &[0, 1], &cfg)
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
    let (image_ids, text_ids) = ([0, 1, 2], [0, 1, 2, 1]);
    for kind in [LossKind::Paper, LossKind::InfoNce, LossKind::Siglip] {
        let cfg = config(kind, 2, Distance::Euclidean);
        let value = |dtype: DType| -> f64 {
            let t = Temperature::with_values(2.0, -1.0, true, 100f64.ln(), dtype, &Device::Cpu)
                .unwrap();
            let (i, x) = (
                tensor(&images).to_dtype(dtype).unwrap(),
                tensor(&texts).to_dtype(dtype).unwrap(),
            );
            Objective::for_epoch(&cfg, 0)
                .forward(&Embedded::new(&i, &x, &image_ids, &text_ids).with_temperature(&t))
                .unwrap()
                .total
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let (f64v, f32v) = (value(DType::F64), value(DType::F32));
        assert!(
            (f32v - f64v).abs() < 1e-5 * (1.0 + f64v.abs()),
            "{kind:?}: {f32v} vs {f64v}"
        );
    }
}

/// Loss values and temperature gradients at fixed inputs, against PyTorch (float64). The
/// script that produced the numbers (run with PyTorch 2.15):
///
/// ```python
/// # Reference values for tests/it/loss.rs::pytorch_reference_values (PyTorch 2.x, float64).
/// import math
/// import torch
/// import torch.nn.functional as F
///
/// torch.set_default_dtype(torch.float64)
/// IMAGES = [[0.9, 0.1, -0.3, 0.2], [-0.2, 0.8, 0.4, -0.1], [0.3, -0.5, 0.7, 0.6]]
/// TEXTS = [[0.7, 0.3, -0.1, 0.4], [0.5, -0.2, -0.6, 0.1], [-0.4, 0.9, 0.2, 0.3],
///          [0.1, -0.3, 0.9, 0.2], [0.6, 0.2, 0.5, 0.5]]
/// TEXT_IDS = [0, 0, 1, 2, 2]          # caption -> image
/// im = F.normalize(torch.tensor(IMAGES), dim=1)
/// tx = F.normalize(torch.tensor(TEXTS), dim=1)
/// pair_tx = tx[[1, 2, 4]]             # one caption per image: the 1:1 batch of VSE++/CLIP/SigLIP
///
/// def euclid(a, b):
///     return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).add(1e-4).sqrt()
///
/// def topk_hinge_rows(d, anchor_ids, ref_ids, margin, k, same_set=False, farthest=False):
///     kept = []
///     for a in range(d.shape[0]):
///         pos = [r for r in range(d.shape[1]) if ref_ids[r] == anchor_ids[a] and not (same_set and r == a)]
///         if farthest and pos:
///             pos = [max(pos, key=lambda r: (d[a, r].item(), -r))]
///         neg = torch.tensor([r for r in range(d.shape[1]) if ref_ids[r] != anchor_ids[a]])
///         for p in pos:
///             h = F.relu(margin + d[a, p] - d[a, neg])
///             kept.append(h.topk(min(k, len(neg))).values)
///     return torch.cat(kept)
///
/// # The paper (Wang et al. 2016), margin 0.2, K = 2, weights 1.5 / 1.0 / 0.05.
/// image_ids = [0, 1, 2]
/// paper = (1.5 * topk_hinge_rows(euclid(tx, im), TEXT_IDS, image_ids, 0.2, 2).mean()
///          + 1.0 * topk_hinge_rows(euclid(im, tx), image_ids, TEXT_IDS, 0.2, 2).mean()
///          + 0.05 * topk_hinge_rows(euclid(tx, tx), TEXT_IDS, TEXT_IDS, 0.2, 2, True, True).mean())
///
/// # VSE++ (Faghri et al. 2018), ContrastiveLoss of github.com/fartashf/vsepp (margin 0.5 here).
/// def vsepp(im, s, margin=0.2, max_violation=False):
///     scores = im.mm(s.t())
///     diagonal = scores.diag().view(im.size(0), 1)
///     d1 = diagonal.expand_as(scores)
///     d2 = diagonal.t().expand_as(scores)
///     cost_s = (margin + scores - d1).clamp(min=0)
///     cost_im = (margin + scores - d2).clamp(min=0)
///     mask = torch.eye(scores.size(0)) > .5
///     cost_s = cost_s.masked_fill_(mask, 0)
///     cost_im = cost_im.masked_fill_(mask, 0)
///     if max_violation:
///         cost_s = cost_s.max(1)[0]
///         cost_im = cost_im.max(0)[0]
///     return cost_s.sum() + cost_im.sum()
///
/// # CLIP (Radford et al. 2021): symmetric cross-entropy, logit scale exp(log(1/0.07)).
/// def clip(im, s, log_scale):
///     logits = log_scale.exp() * im @ s.t()
///     labels = torch.arange(im.shape[0])
///     return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
///
/// # SigLIP (Zhai et al. 2023), big_vision: -sum(log_sigmoid(z * (t * im·s + b))) / n.
/// def siglip(im, s, log_t, b):
///     logits = im @ s.t() * log_t.exp() + b
///     z = 2 * torch.eye(im.shape[0]) - 1
///     return -F.logsigmoid(z * logits).sum() / im.shape[0]
///
/// log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
/// clip_value = clip(im, pair_tx, log_scale)
/// clip_value.backward()
/// log_t = torch.tensor(math.log(10.0), requires_grad=True)
/// bias = torch.tensor(-10.0, requires_grad=True)
/// siglip_value = siglip(im, pair_tx, log_t, bias)
/// siglip_value.backward()
/// for name, v in [("paper", paper), ("vse_sum", vsepp(im, pair_tx, margin=0.5)),
///                 ("vse_max", vsepp(im, pair_tx, margin=0.5, max_violation=True)),
///                 ("info_nce", clip_value), ("d info_nce / d log_scale", log_scale.grad),
///                 ("siglip", siglip_value), ("d siglip / d log_t", log_t.grad),
///                 ("d siglip / d bias", bias.grad)]:
///     print(f"{name}: {v.item():.15e}")
/// ```
#[test]
fn pytorch_reference_values() {
    let normalise = |rows: &[[f64; 4]]| -> Vec<Vec<f64>> {
        rows.iter()
            .map(|r| {
                let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                r.iter().map(|x| x / n).collect()
            })
            .collect()
    };
    let images = normalise(&[
        [0.9, 0.1, -0.3, 0.2],
        [-0.2, 0.8, 0.4, -0.1],
        [0.3, -0.5, 0.7, 0.6],
    ]);
    let texts = normalise(&[
        [0.7, 0.3, -0.1, 0.4],
        [0.5, -0.2, -0.6, 0.1],
        [-0.4, 0.9, 0.2, 0.3],
        [0.1, -0.3, 0.9, 0.2],
        [0.6, 0.2, 0.5, 0.5],
    ]);
    let pair_texts: Vec<Vec<f64>> = [1, 2, 4].iter().map(|&k| texts[k].clone()).collect();
    let image_ids = [0, 1, 2];
    let close = |got: f64, expected: f64, what: &str| {
        assert!(
            (got - expected).abs() <= 1e-12 * (1.0 + expected.abs()),
            "{what}: tandem {got:e}, PyTorch {expected:e}"
        );
    };
    let value = |cfg: &LossConfig, texts: &[Vec<f64>], text_ids: &[u32], t: &Temperature| {
        let (i, x) = (tensor(&images), tensor(texts));
        let total = Objective::for_epoch(cfg, 0)
            .forward(&Embedded::new(&i, &x, &image_ids, text_ids).with_temperature(t))
            .unwrap()
            .total;
        (total.to_scalar::<f64>().unwrap(), total.backward().unwrap())
    };
    let clip = temperature((1.0f64 / 0.07).ln(), 0.0);
    let siglip = temperature(10f64.ln(), -10.0);

    let paper = LossConfig {
        margin: 0.2,
        top_k: 2,
        ..LossConfig::default()
    };
    close(
        value(&paper, &texts, &[0, 0, 1, 2, 2], &clip).0,
        8.576790675686136e-03,
        "paper",
    );
    for (kind, expected) in [
        (LossKind::VseSum, 6.139390261701189e-01),
        (LossKind::VseMax, 6.020955783667531e-01),
    ] {
        let cfg = LossConfig {
            kind,
            margin: 0.5,
            distance: Distance::Cosine,
            ..LossConfig::default()
        };
        close(
            value(&cfg, &pair_texts, &image_ids, &clip).0,
            expected,
            &format!("{kind:?}"),
        );
    }
    let info_nce = LossConfig {
        kind: LossKind::InfoNce,
        ..LossConfig::default()
    };
    let (v, grads) = value(&info_nce, &pair_texts, &image_ids, &clip);
    close(v, 2.273218492902701e-02, "info_nce");
    let g = |t: &Var| {
        grads
            .get(t.as_tensor())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    close(
        g(&clip.log_scale),
        -5.496352342671962e-02,
        "d info_nce / d log_scale",
    );
    let siglip_cfg = LossConfig {
        kind: LossKind::Siglip,
        ..LossConfig::default()
    };
    let (v, grads) = value(&siglip_cfg, &pair_texts, &image_ids, &siglip);
    let g = |t: &Var| {
        grads
            .get(t.as_tensor())
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    close(v, 2.215051855974285e+00, "siglip");
    close(
        g(&siglip.log_scale),
        -6.817902609199701e+00,
        "d siglip / d log_t",
    );
    close(g(&siglip.bias), -8.646775352393572e-01, "d siglip / d bias");
}
