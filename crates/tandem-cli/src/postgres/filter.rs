//! `--where` filters on a gallery's columns, as SQL with parameters: a value never becomes
//! SQL text, and a column must be one of the gallery's.

use std::str::FromStr;

use tandem::index::Direction;
use tokio_postgres::types::ToSql;

/// A comparison of one column with one value: `COLUMN OP VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    column: String,
    op: Op,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Contains, case-insensitively.
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Text(String),
}

/// Operators by their spelling, longest first so that `<=` is not read as `<`.
const OPS: [(&str, Op); 7] = [
    ("!=", Op::Ne),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("=", Op::Eq),
    ("<", Op::Lt),
    (">", Op::Gt),
    ("~", Op::Contains),
];

/// The columns a search in `direction` may filter on, and whether each holds integers.
fn columns(direction: Direction) -> &'static [(&'static str, bool)] {
    match direction {
        Direction::TextToImage => &[("id", true), ("file", false), ("caption", false)],
        Direction::ImageToText => &[("id", true), ("image", true), ("text", false)],
    }
}

impl FromStr for Filter {
    type Err = String;

    /// `caption~dog`, `id<500`, `image=12`, `file!=a.jpg`; spaces around the operator allowed.
    fn from_str(s: &str) -> Result<Self, String> {
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let column = s[..name_end].to_string();
        let rest = s[name_end..].trim_start();
        let Some((spelling, op)) = OPS.iter().find(|(o, _)| rest.starts_with(o)) else {
            return Err(format!(
                "`{s}`: write COLUMN OP VALUE with OP one of = != < <= > >= ~ (contains), e.g. caption~dog or id<1000"
            ));
        };
        let value = rest[spelling.len()..].trim_start().to_string();
        if column.is_empty() {
            return Err(format!("`{s}`: no column before `{spelling}`"));
        }
        let value = match value.parse::<i64>() {
            Ok(n) if !matches!(op, Op::Contains) => Value::Int(n),
            _ => Value::Text(value),
        };
        Ok(Filter {
            column,
            op: *op,
            value,
        })
    }
}

impl Filter {
    /// This filter's SQL for a search in `direction`, its value the parameter `$n`.
    ///
    /// # Errors
    /// A column the gallery does not have, or an operator its type does not take.
    pub fn sql(&self, direction: Direction, n: usize) -> Result<String, String> {
        let known = columns(direction);
        let Some(&(_, integer)) = known.iter().find(|(c, _)| *c == self.column) else {
            let names: Vec<&str> = known.iter().map(|(c, _)| *c).collect();
            return Err(format!(
                "--where: `{}` is not a column of the {} gallery; it has {}",
                self.column,
                gallery_name(direction),
                names.join(", ")
            ));
        };
        let column = &self.column;
        match (&self.value, integer, self.op) {
            (Value::Int(_), true, op) if op != Op::Contains => {
                Ok(format!("\"{column}\" {} ${n}", spelling(op)))
            }
            (_, true, _) => Err(format!(
                "--where: `{column}` holds whole numbers; compare it with = != < <= > >= and a number"
            )),
            (_, false, Op::Contains) => Ok(format!("\"{column}\" ILIKE ${n}")),
            (_, false, Op::Eq | Op::Ne) => Ok(format!("\"{column}\" {} ${n}", spelling(self.op))),
            (_, false, _) => Err(format!(
                "--where: `{column}` holds text; compare it with =, != or ~ (contains)"
            )),
        }
    }

    /// The parameter of [`Filter::sql`].
    pub fn param(&self) -> Box<dyn ToSql + Sync + Send> {
        match (&self.value, self.op) {
            (Value::Text(t), Op::Contains) => Box::new(format!("%{}%", escape_like(t))),
            (Value::Int(n), Op::Contains) => Box::new(format!("%{n}%")),
            (Value::Int(n), _) => Box::new(*n),
            (Value::Text(t), _) => Box::new(t.clone()),
        }
    }
}

fn spelling(op: Op) -> &'static str {
    OPS.iter()
        .find(|(_, o)| *o == op)
        .map(|(s, _)| if *s == "!=" { "<>" } else { s })
        .expect("every op is spelled")
}

fn gallery_name(direction: Direction) -> &'static str {
    match direction {
        Direction::TextToImage => "images",
        Direction::ImageToText => "captions",
    }
}

/// `%`, `_` and `\` taken literally by ILIKE.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(filter: &str, direction: Direction) -> Result<String, String> {
        filter.parse::<Filter>()?.sql(direction, 3)
    }

    #[test]
    fn filters_become_parameterised_sql() {
        let t2i = Direction::TextToImage;
        let i2t = Direction::ImageToText;
        assert_eq!(sql("caption~dog", t2i).unwrap(), "\"caption\" ILIKE $3");
        assert_eq!(sql("id <= 500", t2i).unwrap(), "\"id\" <= $3");
        assert_eq!(sql("image!=7", i2t).unwrap(), "\"image\" <> $3");
        assert_eq!(sql("text = a dog", i2t).unwrap(), "\"text\" = $3");
        assert_eq!(sql("id>=2", i2t).unwrap(), "\"id\" >= $3");
    }

    #[test]
    fn bad_filters_say_what_is_allowed() {
        let t2i = Direction::TextToImage;
        assert!(
            sql("image=3", t2i)
                .unwrap_err()
                .contains("id, file, caption")
        );
        assert!(sql("id~3", t2i).unwrap_err().contains("whole numbers"));
        assert!(sql("id=abc", t2i).unwrap_err().contains("whole numbers"));
        assert!(sql("caption<dog", t2i).unwrap_err().contains("holds text"));
        assert!(
            "caption"
                .parse::<Filter>()
                .unwrap_err()
                .contains("COLUMN OP VALUE")
        );
        assert!("=3".parse::<Filter>().unwrap_err().contains("no column"));
        // SQL in a column name is not a column name.
        assert!(sql("id;DROP TABLE x=1", t2i).is_err());
    }

    #[test]
    fn contains_takes_like_characters_literally() {
        let filter: Filter = "caption~50%_off\\".parse().unwrap();
        let mut bytes = bytes::BytesMut::new();
        filter
            .param()
            .to_sql_checked(&tokio_postgres::types::Type::TEXT, &mut bytes)
            .unwrap();
        assert_eq!(&bytes[..], b"%50\\%\\_off\\\\%");
    }
}
