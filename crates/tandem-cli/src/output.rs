//! Reports on stdout.

use tandem::eval::RetrievalMetrics;

use crate::cli::Format;

/// Prints one report as a table or JSON.
pub fn print_metrics(m: &RetrievalMetrics, format: Format) {
    match format {
        Format::Table => print!("{}", m.table()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(m).expect("metrics serialise")
        ),
    }
}

/// The side-by-side table of the demo: one row per model.
pub fn comparison_table(rows: &[(&str, &RetrievalMetrics)]) -> String {
    let mut s =
        String::from("model                 i2t R@1  R@5   R@10  t2i R@1  R@5   R@10   rsum\n");
    for (name, m) in rows {
        let [a, b, c] = m.image_to_text;
        let [d, e, f] = m.text_to_image;
        s.push_str(&format!(
            "{name:<21} {a:>6.1} {b:>5.1} {c:>5.1}  {d:>6.1} {e:>5.1} {f:>5.1} {:>6.1}\n",
            m.rsum
        ));
    }
    s
}
