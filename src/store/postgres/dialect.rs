//! The store's SQL is written in the spelling SQLite and PostgreSQL share; the three
//! spellings they do not are rewritten here, once per statement text:
//! - parameters `?N` become `$N`;
//! - `json_extract(column, '$.field')` becomes `(column::jsonb ->> 'field')`, the
//!   expression the schema indexes;
//! - `LIKE` becomes `ILIKE`: SQLite's LIKE ignores ASCII case, and the console's search
//!   must find the same machines on both.

pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(i) = rest.find(['?', 'j', 'L']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix('?')
            && after.starts_with(|c: char| c.is_ascii_digit())
        {
            out.push('$');
            rest = after;
        } else if let Some((json, after)) = json_extract(rest) {
            out.push_str(&json);
            rest = after;
        } else if rest.starts_with("LIKE ") && out.ends_with(' ') {
            out.push_str("ILIKE ");
            rest = &rest["LIKE ".len()..];
        } else {
            let c = rest.chars().next().expect("found above");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.push_str(rest);
    out
}

/// `json_extract(column, '$.field')` at the start of `s`: its PostgreSQL spelling and the rest.
fn json_extract(s: &str) -> Option<(String, &str)> {
    let args = s.strip_prefix("json_extract(")?;
    let close = args.find(')')?;
    let (column, path) = args[..close].split_once(',')?;
    let field = path.trim().strip_prefix("'$.")?.strip_suffix('\'')?;
    let plain = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain(column.trim()) || !plain(field) {
        return None;
    }
    Some((format!("({}::jsonb ->> '{field}')", column.trim()), &args[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn parameters_json_and_like_are_spelled_for_postgres() {
        assert_eq!(
            to_postgres("SELECT 1 FROM machines WHERE json_extract(expected, '$.ip') = ?1 AND mac != ?12"),
            "SELECT 1 FROM machines WHERE (expected::jsonb ->> 'ip') = $1 AND mac != $12"
        );
        assert_eq!(
            to_postgres("(?4 IS NULL OR mac LIKE ?4 ESCAPE '\\')"),
            "($4 IS NULL OR mac ILIKE $4 ESCAPE '\\')"
        );
        // Words that merely contain the letters are left alone.
        assert_eq!(
            to_postgres("SELECT joined_at, LIKELY FROM j"),
            "SELECT joined_at, LIKELY FROM j"
        );
    }
}
