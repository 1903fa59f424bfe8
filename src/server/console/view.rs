//! Presentation helpers: relative times, YAML highlighting and diffs. Every function that
//! returns markup escapes all of its input first; the markup it adds is fixed spans.

use chrono::{DateTime, Utc};

/// The same escaping the templates apply (minijinja's), for the markup built here.
pub fn escape(s: &str) -> String {
    minijinja::HtmlEscape(s).to_string()
}

/// "3 min ago", as a person reads a list.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    match s {
        i64::MIN..=-1 => "just now".into(),
        0..=44 => "just now".into(),
        45..=89 => "1 min ago".into(),
        90..=3599 => format!("{} min ago", (s + 30) / 60),
        3600..=5399 => "1 h ago".into(),
        5400..=86_399 => format!("{} h ago", (s + 1800) / 3600),
        86_400..=172_799 => "yesterday".into(),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// Highlights one line of YAML: key, scalar, comment, document marker.
fn yaml_line(line: &str) -> String {
    if line.trim_start().starts_with('#') {
        return format!("<span class=\"c\">{}</span>", escape(line));
    }
    if line.trim() == "---" {
        return format!("<span class=\"d\">{}</span>", escape(line));
    }
    let indent = line.len() - line.trim_start_matches([' ', '-']).len();
    let (lead, rest) = line.split_at(indent);
    // A key is what precedes the first ": " (or a trailing ':') outside quotes.
    let key_end = if rest.starts_with('"') || rest.starts_with('\'') {
        let q = rest.as_bytes()[0];
        rest[1..]
            .find(q as char)
            .map(|i| i + 2)
            .filter(|&i| rest[i..].starts_with(':'))
    } else {
        rest.find(": ").or_else(|| rest.ends_with(':').then(|| rest.len() - 1))
    };
    match key_end {
        Some(k) => {
            let (key, value) = rest.split_at(k);
            let value = &value[1..];
            format!(
                "{}<span class=\"k\">{}</span>:{}",
                escape(lead),
                escape(key),
                scalar(value)
            )
        }
        None => format!("{}{}", escape(lead), scalar(rest)),
    }
}

fn scalar(v: &str) -> String {
    let t = v.trim();
    if t.is_empty() {
        return escape(v);
    }
    let class = if t.starts_with('"') || t.starts_with('\'') {
        "s"
    } else if t.parse::<f64>().is_ok() || matches!(t, "true" | "false" | "null" | "~") {
        "n"
    } else {
        "s"
    };
    let pad = &v[..v.len() - v.trim_start().len()];
    format!("{}<span class=\"{class}\">{}</span>", escape(pad), escape(t))
}

pub fn highlight_yaml(text: &str) -> String {
    text.lines().map(yaml_line).collect::<Vec<_>>().join("\n")
}

/// A unified diff of `old` → `new`, highlighted; empty when they are equal.
pub fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    if d.ratio() == 1.0 {
        return String::new();
    }
    let text = d
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string();
    text.lines()
        .map(|l| {
            let class = if l.starts_with("@@") {
                "hunk"
            } else if l.starts_with('+') {
                "add"
            } else if l.starts_with('-') {
                "del"
            } else {
                ""
            };
            if class.is_empty() {
                escape(l)
            } else {
                format!("<span class=\"{class}\">{}</span>", escape(l))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlighting_escapes_everything() {
        let h = highlight_yaml("metadata:\n  name: \"<img src=x onerror=alert(1)>\"\n  # a <b>comment</b>\n---");
        assert!(!h.contains("<img"));
        assert!(!h.contains("<b>"));
        assert!(h.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(h.contains("<span class=\"k\">name</span>"));
    }

    #[test]
    fn diff_marks_lines_and_escapes() {
        let d = diff("a: 1\n", "a: 2\nb: <x>\n", "base", "proposal");
        assert!(d.contains("<span class=\"del\">-a: 1</span>"));
        assert!(d.contains("<span class=\"add\">+b: &lt;x&gt;</span>"));
        assert_eq!(diff("same\n", "same\n", "a", "b"), "");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(5), now), "just now");
        assert_eq!(ago(now - chrono::Duration::minutes(3), now), "3 min ago");
        assert_eq!(ago(now - chrono::Duration::hours(5), now), "5 h ago");
        assert_eq!(ago(now - chrono::Duration::days(3), now), "3 days ago");
    }
}
