//! Reports on stdout.

use tandem::eval::RetrievalMetrics;

use crate::cli::Format;

/// Prints one report as a table, JSON or CSV.
pub fn print_metrics(m: &RetrievalMetrics, format: Format) {
    match format {
        Format::Table => print!("{}", m.table()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(m).expect("metrics serialise")
        ),
        Format::Csv => print!("{}", m.csv()),
    }
}

/// The side-by-side table of the demo and reports: one row per model.
pub fn comparison_table(rows: &[(&str, &RetrievalMetrics)]) -> String {
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0)
        .max(21);
    let mut s = format!(
        "{:<width$} i2t R@1  R@5   R@10  t2i R@1  R@5   R@10   rsum\n",
        "model"
    );
    for (name, m) in rows {
        let [a, b, c] = m.image_to_text;
        let [d, e, f] = m.text_to_image;
        s.push_str(&format!(
            "{name:<width$} {a:>7.1} {b:>5.1} {c:>5.1}  {d:>6.1} {e:>5.1} {f:>5.1} {:>6.1}\n",
            m.rsum
        ));
    }
    s
}

/// The same comparison as CSV.
pub fn comparison_csv(rows: &[(&str, &RetrievalMetrics)]) -> String {
    let mut s = String::from("model,i2t_R@1,i2t_R@5,i2t_R@10,t2i_R@1,t2i_R@5,t2i_R@10,rsum\n");
    for (name, m) in rows {
        let [a, b, c] = m.image_to_text;
        let [d, e, f] = m.text_to_image;
        s.push_str(&format!(
            "{},{a:.4},{b:.4},{c:.4},{d:.4},{e:.4},{f:.4},{:.4}\n",
            csv_field(name),
            m.rsum
        ));
    }
    s
}

/// Quotes a CSV field when it needs it.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
