//! Escaping untrusted text for GitHub-flavoured Markdown (PR bodies, proposal summaries).
//! See `../shared/docs/github-bot-practices.md` §6: no mention, reference, link or markup
//! may come out of a fact.

/// Text safe in a Markdown paragraph or table cell.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '|' => out.push_str("\\|"),
            // A zero-width space after @ and # breaks mentions and issue references.
            '@' => out.push_str("@\u{200b}"),
            '#' => out.push_str("#\u{200b}"),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '!' | '~' | '{' | '}' | '+' | '-' | '.' | ':' | '='
            | '$' | '^' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    // Autolinks need `://` or `www.`; with `:` and `.` escaped above neither survives.
    out
}

/// An inline code span that no content can close early (the fence is longer than any
/// backtick run inside), on one line: a path or a MAC shown as it is, never as markup.
pub fn code(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect();
    let longest = clean.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if clean.starts_with('`') || clean.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{clean}{pad}{fence}")
}

/// A fenced code block that no content can close early: the fence is longer than the
/// longest backtick run inside.
pub fn fenced(text: &str, lang: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    let lang: String = lang.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{fence}{lang}\n{}\n{fence}", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_span_holds_any_text() {
        assert_eq!(code("hardware/a.yaml"), "`hardware/a.yaml`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code("a\nb"), "`a b`");
    }

    #[test]
    fn facts_cannot_mention_link_or_inject_markup() {
        let out = escape("@octocat fixes #12 <img src=x onerror=alert(1)> [x](https://evil) | next");
        assert!(!out.contains("@o"));
        assert!(!out.contains("#1"));
        assert!(!out.contains('<'));
        assert!(!out.contains("]("));
        assert!(out.contains("\\|"));
        assert!(!out.contains("https://"));
    }

    #[test]
    fn fence_outlasts_backticks_inside() {
        let f = fenced("a ```` b", "json");
        assert!(f.starts_with("`````json\n"));
        assert!(f.ends_with("\n`````"));
    }
}
