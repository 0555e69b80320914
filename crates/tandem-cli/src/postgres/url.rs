//! Connection strings as they may be shown: without their password.

/// `url` with any password replaced by `***`: the `user:password@` of a URL, a `password=`
/// query parameter, or the `password=` key of a `key=value` string.
pub fn redact(url: &str) -> String {
    let mut shown = url.to_string();
    if let Some(rest_at) = shown.find("://").map(|i| i + 3) {
        let authority_end = shown[rest_at..]
            .find(['/', '?'])
            .map_or(shown.len(), |i| rest_at + i);
        if let Some(at) = shown[rest_at..authority_end]
            .rfind('@')
            .map(|i| rest_at + i)
            && let Some(colon) = shown[rest_at..at].find(':').map(|i| rest_at + i)
        {
            shown.replace_range(colon + 1..at, "***");
        }
    }
    redact_key(&shown)
}

/// `password=VALUE` (up to `&` or whitespace) → `password=***`.
fn redact_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password=") {
        let starts_key = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ' | b'\t');
        let value_start = i + "password=".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if starts_key {
            let end = rest
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://app:s3cr@t@db.example:5432/gallery",
                "postgres://app:***@db.example:5432/gallery",
            ),
            (
                "postgresql://app@localhost/db?password=hunter2&sslmode=disable",
                "postgresql://app@localhost/db?password=***&sslmode=disable",
            ),
            (
                "host=localhost user=app password=hunter2 dbname=db",
                "host=localhost user=app password=*** dbname=db",
            ),
            ("postgres://localhost/db", "postgres://localhost/db"),
            ("postgres://app@localhost/db", "postgres://app@localhost/db"),
            (
                "postgres://a:b@h/x?application_name=p",
                "postgres://a:***@h/x?application_name=p",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
