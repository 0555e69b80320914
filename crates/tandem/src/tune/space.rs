//! The search space of `tandem tune`: fixed overrides and searched keys, read from TOML and
//! checked against the config before any trial starts.
//!
//! ```toml
//! [fixed]                  # applied to every trial
//! train.epochs = 20
//!
//! [search]
//! loss.kind = { choices = ["paper", "info_nce"] }
//! train.lr = { log_uniform = [1e-5, 1e-3], steps = 3 }   # steps: the points of a grid
//! loss.margin = { uniform = [0.05, 0.3] }
//! train.batch_size = { int = [125, 500] }
//! ```

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::error::{Error, Result};

/// One trial's values, in the order of the space's keys.
pub type Params = Vec<(String, toml::Value)>;

/// The values one searched key may take.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// One of these values.
    Choices(Vec<toml::Value>),
    /// A real number in `[low, high]`, uniformly; `steps` evenly spaced points for a grid.
    Uniform {
        /// Lower end.
        low: f64,
        /// Upper end.
        high: f64,
        /// Points for a grid; a random search ignores it.
        steps: Option<usize>,
    },
    /// A positive real number in `[low, high]`, uniform in its logarithm (learning rates,
    /// weight decay); `steps` points evenly spaced in the logarithm for a grid.
    LogUniform {
        /// Lower end, above 0.
        low: f64,
        /// Upper end.
        high: f64,
        /// Points for a grid; a random search ignores it.
        steps: Option<usize>,
    },
    /// A whole number in `[low, high]`, both included; `steps` evenly spaced values for a grid
    /// (every value when omitted).
    Int {
        /// Lowest value.
        low: i64,
        /// Highest value.
        high: i64,
        /// Values for a grid; every value when omitted.
        steps: Option<usize>,
    },
}

/// A searched key and its domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Config key, e.g. `train.lr`.
    pub key: String,
    /// Its values.
    pub domain: Domain,
}

/// How trials draw their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Independent random draws, seeded by the trial's number.
    Random,
    /// Every point of the grid once, in a seeded random order (so a search cut short by its
    /// budget is not biased towards the first key's first values).
    Grid,
}

/// The whole space: overrides every trial shares and the keys that vary.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    /// The file it was read from (named in errors).
    pub path: PathBuf,
    /// Its text (a resumed search checks that the space did not change).
    pub text: String,
    /// Applied to every trial, after the base config.
    pub fixed: Params,
    /// The searched keys.
    pub params: Vec<Param>,
}

/// Grids larger than this are refused: they would never finish and usually mean a typo.
const MAX_GRID: usize = 100_000;

/// Keys a search may not vary: the split must be the same for every trial (or the scores
/// compare different validation images), and the epoch budget belongs to the scheduler.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "seed",
        "the seed also draws the split, so trials would be scored on different validation images; set it in [fixed]",
    ),
    (
        "data.",
        "the split sizes must be the same for every trial; set them in [fixed]",
    ),
    (
        "train.epochs",
        "the epochs are the search's budget (successive halving gives each trial more of them); set them in [fixed]",
    ),
];

impl SearchSpace {
    /// Reads and checks a space file against `base` (the config every trial starts from).
    ///
    /// # Errors
    /// [`Error::BadFile`] naming the file and the key at fault: unknown keys, values of the
    /// wrong type, empty or inverted ranges, invalid values, an empty search.
    pub fn read(path: &Path, base: &Config, sampler: Sampler) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path, base, sampler)
    }

    /// Parses and checks space TOML (see [`SearchSpace::read`]); `path` names it in errors.
    ///
    /// # Errors
    /// As [`SearchSpace::read`].
    pub fn parse(text: &str, path: &Path, base: &Config, sampler: Sampler) -> Result<Self> {
        let bad = |problem: String| {
            Error::bad_file(
                path,
                problem,
                "see `tandem tune --help` for the space format; `tandem config` lists every key",
            )
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        let mut fixed = Vec::new();
        let mut search = Vec::new();
        for (section, value) in &table {
            let toml::Value::Table(body) = value else {
                return Err(bad(format!(
                    "`{section}` must be a table ([fixed] or [search])"
                )));
            };
            match section.as_str() {
                "fixed" => flatten_values("", body, &mut fixed),
                "search" => flatten_domains("", body, &mut search).map_err(&bad)?,
                other => {
                    return Err(bad(format!(
                        "unknown section [{other}]: a space has [fixed] and [search]"
                    )));
                }
            }
        }
        if search.is_empty() {
            return Err(bad("[search] names no key: nothing to search".into()));
        }
        let space = SearchSpace {
            path: path.to_path_buf(),
            text: text.to_string(),
            fixed,
            params: search,
        };
        space.check(base, sampler).map_err(bad)?;
        Ok(space)
    }

    /// Every fixed value and every searched bound applies to `base` and passes validation.
    fn check(&self, base: &Config, sampler: Sampler) -> std::result::Result<(), String> {
        for param in &self.params {
            if let Some((_, why)) = FORBIDDEN.iter().find(|(prefix, _)| {
                param.key == *prefix || (prefix.ends_with('.') && param.key.starts_with(prefix))
            }) {
                return Err(format!("`{}` cannot be searched: {why}", param.key));
            }
            if self.fixed.iter().any(|(k, _)| *k == param.key) {
                return Err(format!(
                    "`{}` is both in [fixed] and in [search]",
                    param.key
                ));
            }
            check_domain(param)?;
            if sampler == Sampler::Grid && grid_values(&param.domain).is_none() {
                return Err(format!(
                    "`{}`: grid sampling needs `steps` for a real-valued range (e.g. steps = 3)",
                    param.key
                ));
            }
        }
        let fixed = apply(base, &self.fixed).map_err(|e| format!("[fixed]: {e}"))?;
        fixed.validate().map_err(|e| format!("[fixed]: {e}"))?;
        for param in &self.params {
            for value in extremes(&param.domain) {
                let trial = apply(&fixed, &[(param.key.clone(), value.clone())])
                    .and_then(|c| c.validate().map(|()| c));
                if let Err(e) = trial {
                    return Err(format!("`{}` = {value}: {e}", param.key));
                }
            }
        }
        if sampler == Sampler::Grid {
            self.grid_size()?;
        }
        Ok(())
    }

    /// Points of the full grid.
    ///
    /// # Errors
    /// When a range has no `steps` or the grid exceeds the size limit.
    pub fn grid_size(&self) -> std::result::Result<usize, String> {
        let mut size = 1usize;
        for p in &self.params {
            let n = grid_values(&p.domain)
                .ok_or_else(|| format!("`{}` has no grid points", p.key))?
                .len();
            size = size.saturating_mul(n);
        }
        if size > MAX_GRID {
            return Err(format!(
                "the grid has {size} points (more than {MAX_GRID}); use fewer steps or --sampler random"
            ));
        }
        Ok(size)
    }

    /// Trial `index`'s values. Random draws depend only on `seed` and `index`, so a resumed
    /// search draws the same trials; grid points are visited in a seeded shuffled order.
    /// `None` once a grid is exhausted.
    pub fn trial(&self, sampler: Sampler, seed: u64, index: usize) -> Option<Params> {
        match sampler {
            Sampler::Random => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(index as u64);
                Some(
                    self.params
                        .iter()
                        .map(|p| (p.key.clone(), draw(&p.domain, &mut rng)))
                        .collect(),
                )
            }
            Sampler::Grid => {
                let axes: Vec<Vec<toml::Value>> = self
                    .params
                    .iter()
                    .map(|p| grid_values(&p.domain).expect("checked when read"))
                    .collect();
                let size: usize = axes.iter().map(Vec::len).product();
                let point = *grid_order(size, seed).get(index)?;
                let mut rest = point;
                let mut values = Vec::with_capacity(axes.len());
                for (p, axis) in self.params.iter().zip(&axes).rev() {
                    values.push((p.key.clone(), axis[rest % axis.len()].clone()));
                    rest /= axis.len();
                }
                values.reverse();
                Some(values)
            }
        }
    }
}

/// `base` with every `key = value` of `params` applied.
///
/// # Errors
/// [`Error::Config`] for an unknown key or a value of the wrong type.
pub fn apply(base: &Config, params: &[(String, toml::Value)]) -> Result<Config> {
    let mut config = base.clone();
    for (key, value) in params {
        config.set(&format!("{key}={value}"))?;
    }
    Ok(config)
}

/// `[fixed]` leaves, with nested tables (`train.epochs = 20` is `train = { epochs = 20 }` in
/// TOML) flattened into dotted keys.
fn flatten_values(prefix: &str, table: &toml::Table, out: &mut Params) {
    for (key, value) in table {
        let key = join(prefix, key);
        match value {
            toml::Value::Table(inner) => flatten_values(&key, inner, out),
            leaf => out.push((key, leaf.clone())),
        }
    }
}

/// `[search]` domains: a table holding one of `choices`, `uniform`, `log_uniform`, `int` is a
/// domain; any other table is a section of dotted keys.
fn flatten_domains(
    prefix: &str,
    table: &toml::Table,
    out: &mut Vec<Param>,
) -> std::result::Result<(), String> {
    const KINDS: [&str; 4] = ["choices", "uniform", "log_uniform", "int"];
    for (key, value) in table {
        let key = join(prefix, key);
        let toml::Value::Table(inner) = value else {
            return Err(format!(
                "`{key}` = {value} is not a domain: write {{ choices = [...] }}, {{ uniform = [low, high] }}, {{ log_uniform = [low, high] }} or {{ int = [low, high] }}"
            ));
        };
        if inner.keys().any(|k| KINDS.contains(&k.as_str())) {
            out.push(Param {
                domain: parse_domain(&key, inner)?,
                key,
            });
        } else {
            flatten_domains(&key, inner, out)?;
        }
    }
    Ok(())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn parse_domain(key: &str, table: &toml::Table) -> std::result::Result<Domain, String> {
    let mut kind = None;
    let mut steps = None;
    for (name, value) in table {
        match name.as_str() {
            "steps" => {
                let n = value
                    .as_integer()
                    .filter(|n| *n >= 2)
                    .ok_or_else(|| format!("`{key}`: steps must be a whole number >= 2"))?;
                steps = Some(n as usize);
            }
            "choices" | "uniform" | "log_uniform" | "int" if kind.is_none() => {
                kind = Some((name.as_str(), value));
            }
            "choices" | "uniform" | "log_uniform" | "int" => {
                return Err(format!("`{key}` has two domains; keep one"));
            }
            other => {
                return Err(format!(
                    "`{key}`: unknown field `{other}` (a domain has choices, uniform, log_uniform or int, and steps)"
                ));
            }
        }
    }
    let (name, value) = kind.expect("flatten_domains saw a domain keyword");
    if name == "choices" {
        if steps.is_some() {
            return Err(format!("`{key}`: steps applies to ranges, not to choices"));
        }
        let values = value
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("`{key}`: choices must be a non-empty array"))?;
        return Ok(Domain::Choices(values.clone()));
    }
    let pair = value
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| format!("`{key}`: {name} must be [low, high]"))?;
    if name == "int" {
        let (Some(low), Some(high)) = (pair[0].as_integer(), pair[1].as_integer()) else {
            return Err(format!("`{key}`: int bounds must be whole numbers"));
        };
        return Ok(Domain::Int { low, high, steps });
    }
    let number = |v: &toml::Value| {
        v.as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .ok_or_else(|| format!("`{key}`: {name} bounds must be numbers, not {v}"))
    };
    let (low, high) = (number(&pair[0])?, number(&pair[1])?);
    Ok(if name == "uniform" {
        Domain::Uniform { low, high, steps }
    } else {
        Domain::LogUniform { low, high, steps }
    })
}

fn check_domain(param: &Param) -> std::result::Result<(), String> {
    let key = &param.key;
    let range = |low: f64, high: f64| {
        if !(low.is_finite() && high.is_finite()) {
            Err(format!("`{key}`: bounds must be finite"))
        } else if low >= high {
            Err(format!(
                "`{key}`: the range [{low}, {high}] is empty or inverted (low must be below high; put a single value in [fixed])"
            ))
        } else {
            Ok(())
        }
    };
    match param.domain {
        Domain::Choices(_) => Ok(()),
        Domain::Uniform { low, high, .. } => range(low, high),
        Domain::LogUniform { low, high, .. } => {
            range(low, high)?;
            if low <= 0.0 {
                return Err(format!(
                    "`{key}`: log_uniform needs low > 0 (got {low}); use uniform for ranges that reach 0"
                ));
            }
            Ok(())
        }
        Domain::Int { low, high, .. } => range(low as f64, high as f64),
    }
}

/// The values to try against the config before the search: every choice, both bounds.
fn extremes(domain: &Domain) -> Vec<toml::Value> {
    match domain {
        Domain::Choices(values) => values.clone(),
        Domain::Uniform { low, high, .. } | Domain::LogUniform { low, high, .. } => {
            vec![toml::Value::Float(*low), toml::Value::Float(*high)]
        }
        Domain::Int { low, high, .. } => {
            vec![toml::Value::Integer(*low), toml::Value::Integer(*high)]
        }
    }
}

/// The grid points of a domain; `None` for a real-valued range without `steps`.
fn grid_values(domain: &Domain) -> Option<Vec<toml::Value>> {
    let spaced = |n: usize, at: &dyn Fn(f64) -> f64| -> Vec<toml::Value> {
        (0..n)
            .map(|i| toml::Value::Float(round_significant(at(i as f64 / (n - 1) as f64))))
            .collect()
    };
    match *domain {
        Domain::Choices(ref values) => Some(values.clone()),
        Domain::Uniform { low, high, steps } => Some(spaced(steps?, &|t| low + t * (high - low))),
        Domain::LogUniform { low, high, steps } => Some(spaced(steps?, &|t| {
            (low.ln() + t * (high.ln() - low.ln())).exp()
        })),
        Domain::Int { low, high, steps } => {
            let count = (high - low) as usize + 1;
            let n = steps.unwrap_or(count).min(count);
            let mut values: Vec<toml::Value> = (0..n)
                .map(|i| {
                    let t = if n == 1 {
                        0.0
                    } else {
                        i as f64 / (n - 1) as f64
                    };
                    toml::Value::Integer(low + (t * (high - low) as f64).round() as i64)
                })
                .collect();
            values.dedup();
            Some(values)
        }
    }
}

fn draw(domain: &Domain, rng: &mut ChaCha8Rng) -> toml::Value {
    match *domain {
        Domain::Choices(ref values) => values[rng.random_range(0..values.len())].clone(),
        Domain::Uniform { low, high, .. } => {
            toml::Value::Float(round_significant(rng.random_range(low..=high)))
        }
        Domain::LogUniform { low, high, .. } => toml::Value::Float(round_significant(
            rng.random_range(low.ln()..=high.ln()).exp(),
        )),
        Domain::Int { low, high, .. } => toml::Value::Integer(rng.random_range(low..=high)),
    }
}

/// Three significant digits: `0.000317` rather than `0.00031694217`, so the trial table and
/// recipe read well; far finer than any difference a search can resolve.
fn round_significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A seeded permutation of `0..size` (Fisher–Yates).
fn grid_order(size: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..size).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..size).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, sampler: Sampler) -> Result<SearchSpace> {
        SearchSpace::parse(text, Path::new("space.toml"), &Config::default(), sampler)
    }

    fn error(text: &str) -> String {
        parse(text, Sampler::Random).unwrap_err().to_string()
    }

    #[test]
    fn dotted_and_quoted_keys_read_alike() {
        let a = parse(
            "[fixed]\ntrain.epochs = 4\n[search]\ntrain.lr = { log_uniform = [1e-5, 1e-3] }\nloss.kind = { choices = [\"paper\", \"info_nce\"] }\n",
            Sampler::Random,
        )
        .unwrap();
        let b = parse(
            "[fixed]\n\"train.epochs\" = 4\n[search]\n\"train.lr\" = { log_uniform = [1e-5, 1e-3] }\n\"loss.kind\" = { choices = [\"paper\", \"info_nce\"] }\n",
            Sampler::Random,
        )
        .unwrap();
        assert_eq!(a.fixed, b.fixed);
        let keys = |s: &SearchSpace| {
            let mut k: Vec<String> = s.params.iter().map(|p| p.key.clone()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&a), ["loss.kind", "train.lr"]);
        assert_eq!(keys(&a), keys(&b));
        assert_eq!(
            a.fixed,
            vec![("train.epochs".into(), toml::Value::Integer(4))]
        );
    }

    #[test]
    fn bad_spaces_are_one_clear_error_naming_the_key() {
        let cases = [
            (
                "[search]\ntrain.lrr = { log_uniform = [1e-5, 1e-3] }",
                "unknown key `train.lrr`",
            ),
            (
                "[search]\nloss.margin = { uniform = [0.3, 0.1] }",
                "empty or inverted",
            ),
            (
                "[search]\nloss.margin = { uniform = [0.1, 0.1] }",
                "empty or inverted",
            ),
            (
                "[search]\ntrain.lr = { log_uniform = [0.0, 1e-3] }",
                "low > 0",
            ),
            ("[search]\nloss.kind = { choices = [] }", "non-empty array"),
            (
                "[search]\ntrain.batch_size = { uniform = [100, 500] }",
                "`train.batch_size` = 100.0",
            ),
            (
                "[search]\nloss.kind = { choices = [\"papr\"] }",
                "`loss.kind` = \"papr\"",
            ),
            (
                "[search]\nmodel.dropout = { uniform = [0.1, 1.5] }",
                "model.dropout",
            ),
            (
                "[search]\ntrain.epochs = { int = [2, 20] }",
                "cannot be searched",
            ),
            ("[search]\nseed = { int = [1, 3] }", "cannot be searched"),
            ("[search]\ntrain.lr = 0.001", "is not a domain"),
            (
                "[search]\ntrain.lr = { log_uniform = [1e-5, 1e-3], step = 3 }",
                "unknown field `step`",
            ),
            (
                "[fixed]\ntrain.batchsize = 5\n[search]\ntrain.lr = { log_uniform = [1e-5, 1e-3] }",
                "[fixed]",
            ),
            (
                "[fixed]\ntrain.lr = 0.1\n[search]\ntrain.lr = { log_uniform = [1e-5, 1e-3] }",
                "both in [fixed] and in [search]",
            ),
            (
                "[serch]\ntrain.lr = { log_uniform = [1e-5, 1e-3] }",
                "unknown section [serch]",
            ),
            ("[fixed]\ntrain.epochs = 3", "nothing to search"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.contains(expected) && message.starts_with("space.toml: "),
                "{text}\n→ {message}\n(expected `{expected}`)"
            );
        }
    }

    #[test]
    fn grid_needs_steps_and_visits_every_point_once() {
        let text = "[search]\ntrain.lr = { log_uniform = [1e-4, 1e-2] }\n";
        assert!(
            parse(text, Sampler::Grid)
                .unwrap_err()
                .to_string()
                .contains("needs `steps`")
        );
        let space = parse(
            "[search]\ntrain.lr = { log_uniform = [1e-4, 1e-2], steps = 3 }\nloss.kind = { choices = [\"paper\", \"info_nce\"] }\ntrain.batch_size = { int = [100, 102] }\n",
            Sampler::Grid,
        )
        .unwrap();
        assert_eq!(space.grid_size().unwrap(), 18);
        let points: Vec<Params> = (0..18)
            .map(|i| space.trial(Sampler::Grid, 7, i).unwrap())
            .collect();
        assert!(space.trial(Sampler::Grid, 7, 18).is_none());
        let mut unique: Vec<String> = points.iter().map(|p| format!("{p:?}")).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 18);
        let lrs: Vec<f64> = points
            .iter()
            .filter_map(|p| p.iter().find(|(k, _)| k == "train.lr")?.1.as_float())
            .collect();
        for expected in [1e-4, 1e-3, 1e-2] {
            assert_eq!(lrs.iter().filter(|&&x| x == expected).count(), 6);
        }
    }

    #[test]
    fn random_draws_stay_in_range_and_repeat_for_a_seed() {
        let space = parse(
            "[search]\ntrain.lr = { log_uniform = [1e-5, 1e-3] }\nloss.margin = { uniform = [0.05, 0.3] }\ntrain.batch_size = { int = [100, 400] }\n",
            Sampler::Random,
        )
        .unwrap();
        let mut low_lr = 0;
        for i in 0..400 {
            let p = space.trial(Sampler::Random, 3, i).unwrap();
            assert_eq!(p, space.trial(Sampler::Random, 3, i).unwrap());
            let value = |key: &str| p.iter().find(|(k, _)| k == key).unwrap().1.clone();
            let lr = value("train.lr").as_float().unwrap();
            let margin = value("loss.margin").as_float().unwrap();
            let batch = value("train.batch_size").as_integer().unwrap();
            assert!((1e-5..=1e-3).contains(&lr), "{lr}");
            assert!((0.05..=0.3).contains(&margin), "{margin}");
            assert!((100..=400).contains(&batch));
            low_lr += usize::from(lr < 1e-4);
            // The values apply to a config as they are.
            apply(&Config::default(), &p).unwrap().validate().unwrap();
        }
        // Log-uniform: half of the draws fall in the lower decade (400 draws, 5 sd ≈ 50).
        assert!((150..250).contains(&low_lr), "{low_lr} of 400 below 1e-4");
        assert_ne!(
            space.trial(Sampler::Random, 3, 0),
            space.trial(Sampler::Random, 4, 0)
        );
    }

    #[test]
    fn rounding_keeps_three_significant_digits() {
        assert_eq!(round_significant(0.000316942), 0.000317);
        assert_eq!(round_significant(123456.0), 123000.0);
        assert_eq!(round_significant(-0.0123456), -0.0123);
    }
}
