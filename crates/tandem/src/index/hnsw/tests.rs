use super::links::Links;
use super::*;
use crate::data::LatentRows;

fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    LatentRows {
        dim,
        latent: 16,
        noise: 0.3,
        basis_seed: 3,
    }
    .draw(n, seed)
}

/// The exact top `k` of `query`, by f64 inner products, ties to the lower id.
fn brute_force(data: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<u32> {
    let mut scored: Vec<(f64, u32)> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, r)| {
            let s: f64 = r
                .iter()
                .zip(query)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            (s, i as u32)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

fn recall_at_10(graph: &Graph, data: &[f32], queries: &[f32], dim: usize, ef: usize) -> f64 {
    let gallery = Rows { data, dim };
    let mut hits = 0;
    let mut wanted = 0;
    for q in queries.chunks_exact(dim) {
        let exact = brute_force(data, dim, q, 10);
        let found: Vec<u32> = graph
            .search(gallery, q, 10, ef)
            .iter()
            .map(|s| s.id)
            .collect();
        hits += found.iter().filter(|id| exact.contains(id)).count();
        wanted += exact.len();
    }
    hits as f64 / wanted as f64
}

#[test]
fn finds_the_exact_neighbours_of_held_out_queries() {
    let dim = 48;
    let data = rows(4000, dim, 1);
    let queries = rows(200, dim, 2);
    let graph = Graph::build(Rows { data: &data, dim }, 12, 80, 5, |_| {});
    let high = recall_at_10(&graph, &data, &queries, dim, 100);
    let low = recall_at_10(&graph, &data, &queries, dim, 10);
    eprintln!("recall@10: ef 100 {high}, ef 10 {low}");
    assert!(high >= 0.97, "recall@10 at ef 100: {high}");
    // A narrower beam finds fewer: the breadth really is the search's.
    assert!(low < high, "ef 10: {low}, ef 100: {high}");
    // Scores come back best first, and are the rows' inner products.
    let q = &queries[..dim];
    let found = graph.search(Rows { data: &data, dim }, q, 10, 50);
    assert_eq!(found.len(), 10);
    for pair in found.windows(2) {
        assert!(pair[0] >= pair[1]);
    }
    for s in &found {
        let row = &data[s.id as usize * dim..(s.id as usize + 1) * dim];
        assert!((s.score - crate::eval::dot(row, q)).abs() < 1e-5);
    }
}

#[test]
fn every_row_finds_itself() {
    let dim = 32;
    let data = rows(1500, dim, 4);
    let graph = Graph::build(Rows { data: &data, dim }, 8, 40, 1, |_| {});
    let gallery = Rows { data: &data, dim };
    let missed = (0..1500u32)
        .filter(|&i| graph.search(gallery, gallery.row(i), 1, 50)[0].id != i)
        .count();
    eprintln!("{missed} of 1500 rows did not find themselves");
    // Insertion runs on every core, so the graph, and the count, vary from run to run: over 25
    // runs of the whole module, 0 (15 runs), 1 (9) and 3 (1); a broken walk misses hundreds.
    assert!(missed <= 5, "{missed} rows did not find themselves");
}

#[test]
fn lists_stay_within_capacity_without_self_links_or_repeats() {
    let dim = 16;
    let data = rows(3000, dim, 6);
    let m = 4;
    let graph = Graph::build(Rows { data: &data, dim }, m, 30, 2, |_| {});
    let mut neighbours = Vec::new();
    let mut linked = 0;
    for node in 0..graph.len() {
        for level in 0..=graph.links.level(node) {
            graph.links.read(node, level, &mut neighbours);
            assert!(neighbours.len() <= graph.links.capacity(level));
            assert!(
                !neighbours.contains(&(node as u32)),
                "node {node} links to itself"
            );
            let mut unique = neighbours.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), neighbours.len(), "node {node} repeats a link");
            linked += usize::from(level == 0 && !neighbours.is_empty());
        }
    }
    assert_eq!(linked, graph.len(), "every node has layer-0 links");
    // With M 4 a few nodes reach layer 1 and above, about one in four per layer.
    let upper = (0..graph.len())
        .filter(|&i| graph.links.level(i) > 0)
        .count();
    assert!((500..1000).contains(&upper), "{upper} nodes above layer 0");
}

#[test]
fn one_thread_builds_the_same_graph_every_time() {
    let dim = 16;
    let data = rows(2500, dim, 8);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let once =
        || pool.install(|| write(&Graph::build(Rows { data: &data, dim }, 6, 40, 9, |_| {})));
    assert!(once() == once(), "two builds on one thread differ");
}

#[test]
fn a_saved_graph_reads_back_and_searches_the_same() {
    let dim = 24;
    let data = rows(2000, dim, 10);
    let gallery = Rows { data: &data, dim };
    let graph = Graph::build(gallery, 8, 40, 3, |_| {});
    let bytes = write(&graph);
    let back = read(&bytes, gallery).unwrap();
    assert!(
        write(&back) == bytes,
        "the graph read back writes other bytes"
    );
    for q in rows(20, dim, 11).chunks_exact(dim) {
        assert_eq!(
            graph.search(gallery, q, 10, 30),
            back.search(gallery, q, 10, 30)
        );
    }
}

#[test]
fn damaged_graph_files_are_refused() {
    let dim = 8;
    let data = rows(300, dim, 12);
    let graph = Graph::build(Rows { data: &data, dim }, 4, 20, 3, |_| {});
    let bytes = write(&graph);
    // A gallery of `rows` rows: the graph's, cut or padded with zero rows.
    let refused = |bytes: &[u8], rows: usize| {
        let gallery: Vec<f32> = data
            .iter()
            .copied()
            .chain(std::iter::repeat(0.0))
            .take(rows * dim)
            .collect();
        read(
            bytes,
            Rows {
                data: &gallery,
                dim,
            },
        )
        .err()
        .expect("refused")
    };
    assert!(refused(&bytes[..bytes.len() - 9], 300).contains("safetensors"));
    assert!(refused(&bytes, 301).contains("300 nodes"));
    assert!(refused(b"not a graph", 300).contains("safetensors"));
    // A link to a node that does not exist, and a count past the list's capacity.
    let mut raw = graph.links.to_raw();
    raw.layer0[1] = 5000;
    let e = Links::from_raw(raw).err().expect("refused");
    assert!(e.contains("links to 5000"), "{e}");
    let mut raw = graph.links.to_raw();
    raw.layer0[0] = 9;
    let e = Links::from_raw(raw).err().expect("refused");
    assert!(e.contains("too many links"), "{e}");
}

#[test]
fn empty_and_single_row_graphs() {
    let empty = Graph::build(Rows { data: &[], dim: 4 }, 4, 10, 1, |_| {});
    assert!(
        empty
            .search(Rows { data: &[], dim: 4 }, &[1.0, 0.0, 0.0, 0.0], 3, 10)
            .is_empty()
    );
    let none = Rows { data: &[], dim: 4 };
    assert_eq!(read(&write(&empty), none).unwrap().len(), 0);
    let one = [0.0, 1.0, 0.0, 0.0];
    let single = Graph::build(Rows { data: &one, dim: 4 }, 4, 10, 1, |_| {});
    let found = single.search(Rows { data: &one, dim: 4 }, &one, 3, 10);
    assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), [0]);
}
