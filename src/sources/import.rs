//! Bulk import: a CSV (or JSON) of machines an operator expects. Parsing is pure and
//! row-precise: every row gets its own list of errors, named by the line it is on, so a
//! preview can show them all before anything is stored.
//!
//! Columns: `mac` (required), then any of `hostname`, `ip`, `netmask`, `gateway`,
//! `nameservers`, `bmc_address`, `bmc_secret`, `workflow`, `location`, `labels`. The
//! separator is `,` or `;` (whichever the header uses); a UTF-8 BOM and CRLF line ends are
//! tolerated; MACs may be written in any common form.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::domain::facts::clean;
use crate::domain::{Expected, Mac};

pub const COLUMNS: &[&str] = &[
    "mac",
    "hostname",
    "ip",
    "netmask",
    "gateway",
    "nameservers",
    "bmc_address",
    "bmc_secret",
    "workflow",
    "location",
    "labels",
];
/// More rows than any rack room holds; bounds the work one request can cause.
pub const MAX_ROWS: usize = 50_000;
/// The longest value a cell may hold (a list of labels fits many times over).
pub const MAX_FIELD: usize = 4096;
/// Errors kept per row: enough to fix it, bounded however broken the row is.
pub const MAX_ERRORS: usize = 10;

/// A problem with the file as a whole: nothing in it is usable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is not UTF-8 text (line {line})")]
    NotText { line: u64 },
    #[error(
        "line 1: the header has no `mac` column (found: {found}); the first line must name the columns, e.g. mac,hostname,ip"
    )]
    NoMacColumn { found: String },
    #[error("line 1: unknown column {column:?}; known columns: {known}")]
    UnknownColumn { column: String, known: String },
    #[error("line 1: column {0:?} appears twice")]
    DuplicateColumn(String),
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("the file has {0} rows; import at most {MAX_ROWS} at once")]
    TooManyRows(usize),
    #[error("{0}")]
    Json(String),
}

/// One row as parsed: its values if they are valid, and every reason it is not.
#[derive(Debug, Clone, Serialize)]
pub struct ParsedRow {
    pub line: u32,
    /// The MAC as written, for the preview, even when it does not parse.
    pub raw_mac: String,
    pub mac: Option<Mac>,
    pub values: Expected,
    pub errors: Vec<String>,
}

impl ParsedRow {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.mac.is_some()
    }
}

/// Parses CSV text into rows; file-level problems are an `Err`, row problems are in the rows.
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<ParsedRow>, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ImportError::Empty);
    }
    // csv counts a CRLF line end as no line at all, so line numbers would drift.
    let unix: Vec<u8>;
    let bytes = if bytes.contains(&b'\r') {
        unix = String::from_utf8_lossy(bytes).replace("\r\n", "\n").into_bytes();
        if std::str::from_utf8(bytes).is_err() {
            let line = bytes
                .split(|&b| b == b'\n')
                .position(|l| std::str::from_utf8(l).is_err())
                .unwrap_or(0) as u64
                + 1;
            return Err(ImportError::NotText { line });
        }
        &unix[..]
    } else {
        bytes
    };
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let header = &bytes[..header_end];
    // The header decides the separator: whichever of `;` and `,` it uses more.
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    let delimiter = if count(b';') > count(b',') { b';' } else { b',' };

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = reader.headers().map_err(|e| csv_error(e, 1))?.clone();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let names: Vec<String> = headers.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() && i + 1 == names.len() {
            continue; // a trailing separator
        }
        let Some(known) = COLUMNS.iter().find(|c| **c == name.as_str()) else {
            if !names.iter().any(|n| n == "mac") {
                return Err(ImportError::NoMacColumn {
                    found: names.join(", "),
                });
            }
            return Err(ImportError::UnknownColumn {
                column: name.clone(),
                known: COLUMNS.join(", "),
            });
        };
        if index.insert(known, i).is_some() {
            return Err(ImportError::DuplicateColumn(name.clone()));
        }
    }
    if !index.contains_key("mac") {
        return Err(ImportError::NoMacColumn {
            found: names.join(", "),
        });
    }

    let mut rows = Vec::new();
    let mut first_line: HashMap<Mac, u32> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Err(csv_error(e, line));
            }
        };
        let line = record.position().map(|p| p.line() as u32).unwrap_or(0);
        if record.iter().all(str::is_empty) {
            continue; // blank lines between blocks are common in hand-made files
        }
        if rows.len() >= MAX_ROWS {
            return Err(ImportError::TooManyRows(rows.len() + 1));
        }
        let mut errors = Vec::new();
        for (i, value) in record.iter().enumerate() {
            if value.len() > MAX_FIELD {
                errors.push(format!(
                    "{} is longer than {MAX_FIELD} bytes",
                    names.get(i).map(String::as_str).unwrap_or("a field")
                ));
            }
        }
        let field = |name: &str| {
            index
                .get(name)
                .and_then(|&i| record.get(i))
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= MAX_FIELD)
        };
        if record.len() > names.len() && record.iter().skip(names.len()).any(|f| !f.is_empty()) {
            errors.push(format!(
                "{} fields, but the header names {} columns (quote values that contain the separator)",
                record.len(),
                names.len()
            ));
        }
        let row = row_from(line, |name| field(name).map(str::to_string), &mut errors);
        rows.push(finish_row(row, errors, &mut first_line, "line", " in this file"));
    }
    Ok(rows)
}

/// Parses the JSON form: `[{"mac": "...", "hostname": "...", ...}, ...]` or
/// `{"rows": [...]}`; row numbers count from 1.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<ParsedRow>, ImportError> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ImportError::Json(format!("the body is not valid JSON: {e}")))?;
    let items = match &doc {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o
            .get("rows")
            .and_then(|r| r.as_array())
            .ok_or_else(|| ImportError::Json("send an array of rows or {\"rows\": [...]}".into()))?,
        _ => return Err(ImportError::Json("send an array of rows or {\"rows\": [...]}".into())),
    };
    if items.len() > MAX_ROWS {
        return Err(ImportError::TooManyRows(items.len()));
    }
    let mut rows = Vec::new();
    let mut first_line: HashMap<Mac, u32> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let line = i as u32 + 1;
        let mut errors = Vec::new();
        let Some(obj) = item.as_object() else {
            rows.push(ParsedRow {
                line,
                raw_mac: String::new(),
                mac: None,
                values: Expected::default(),
                errors: vec!["a row must be an object".into()],
            });
            continue;
        };
        for key in obj.keys() {
            if !COLUMNS.contains(&key.as_str()) {
                errors.push(format!("unknown field {key:?}"));
            }
        }
        // Strings, or for lists an array of strings (labels: an object of strings); any
        // other type is named, not silently dropped.
        for (key, value) in obj {
            let ok = match value {
                serde_json::Value::Null | serde_json::Value::String(_) => true,
                serde_json::Value::Array(a) => {
                    matches!(key.as_str(), "nameservers" | "labels") && a.iter().all(|v| v.is_string())
                }
                serde_json::Value::Object(o) => key == "labels" && o.values().all(|v| v.is_string()),
                _ => false,
            };
            if !ok && COLUMNS.contains(&key.as_str()) {
                errors.push(format!(
                    "{key} must be a string{}",
                    if matches!(key.as_str(), "nameservers" | "labels") {
                        " or a list of strings"
                    } else {
                        ""
                    }
                ));
            }
        }
        let field = |name: &str| {
            let text = match obj.get(name) {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" "),
                Some(serde_json::Value::Object(o)) if name == "labels" => o
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => return None,
            };
            (text.len() <= MAX_FIELD).then_some(text)
        };
        let row = row_from(line, field, &mut errors);
        rows.push(finish_row(row, errors, &mut first_line, "row", ""));
    }
    Ok(rows)
}

/// Puts the row's structural errors first and marks a MAC seen earlier in the same file.
fn finish_row(
    mut row: ParsedRow,
    structural: Vec<String>,
    first_line: &mut HashMap<Mac, u32>,
    unit: &str,
    scope: &str,
) -> ParsedRow {
    if let Some(mac) = row.mac {
        match first_line.get(&mac) {
            Some(first) => row
                .errors
                .push(format!("mac {mac} is a duplicate of {unit} {first}{scope}")),
            None => {
                first_line.insert(mac, row.line);
            }
        }
    }
    row.errors.splice(0..0, structural);
    if row.errors.len() > MAX_ERRORS {
        let more = row.errors.len() - MAX_ERRORS;
        row.errors.truncate(MAX_ERRORS);
        row.errors.push(format!("… and {more} more"));
    }
    row
}

fn csv_error(e: csv::Error, line: u64) -> ImportError {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => ImportError::NotText { line: line.max(1) },
        _ => ImportError::Malformed {
            line: line.max(1),
            message: e.to_string(),
        },
    }
}

/// Validates one row's fields. Every value that reaches a manifest is checked against the
/// grammar Kubernetes or the network gives it, so no value can carry structure.
fn row_from(line: u32, field: impl Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> ParsedRow {
    let raw_mac = field("mac").unwrap_or_default();
    let mac = if raw_mac.is_empty() {
        errors.push("mac is empty".into());
        None
    } else {
        match Mac::parse(&raw_mac) {
            Ok(m) => Some(m),
            Err(e) => {
                // The parser's message quotes the value; a huge one is only counted.
                errors.push(if raw_mac.chars().count() <= 64 {
                    format!("mac: {e}")
                } else {
                    format!("mac: {} characters are not a MAC address", raw_mac.chars().count())
                });
                None
            }
        }
    };
    let mut v = Expected {
        row: line,
        ..Expected::default()
    };

    if let Some(h) = field("hostname") {
        let lower = h.to_ascii_lowercase();
        if is_hostname(&lower) {
            v.hostname = Some(lower)
        } else {
            errors.push(format!(
                "hostname {:?} is not a host name (letters, digits, dashes and dots)",
                shorten(&h)
            ))
        }
    }
    let ip = field("ip").map(|s| (s.parse::<IpAddr>(), s));
    match ip {
        Some((Ok(a), _)) => v.ip = Some(a.to_string()),
        Some((Err(_), s)) => errors.push(format!("ip {:?} is not an IP address", shorten(&s))),
        None => {}
    }
    if let Some(m) = field("netmask") {
        match netmask(&m) {
            Some(n) => v.netmask = Some(n),
            None => errors.push(format!(
                "netmask {:?} is neither a dotted mask (255.255.255.0) nor a prefix length (24)",
                shorten(&m)
            )),
        }
    }
    if let Some(g) = field("gateway") {
        match g.parse::<IpAddr>() {
            Ok(a) => v.gateway = Some(a.to_string()),
            Err(_) => errors.push(format!("gateway {:?} is not an IP address", shorten(&g))),
        }
    }
    if let Some(ns) = field("nameservers") {
        for part in split_list(&ns) {
            match part.parse::<IpAddr>() {
                Ok(a) if v.nameservers.len() < 8 => v.nameservers.push(a.to_string()),
                Ok(_) => {
                    errors.push("nameservers: at most 8".into());
                    break;
                }
                Err(_) => errors.push(format!("nameservers: {:?} is not an IP address", shorten(part))),
            }
        }
    }
    if (v.netmask.is_some() || v.gateway.is_some()) && v.ip.is_none() {
        errors.push("netmask and gateway need an ip".into());
    }
    // One address family per row: Tinkerbell's DHCP hands out one.
    if let Some(ip) = v.ip.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) {
        if v.netmask.is_some() && ip.is_ipv6() {
            errors.push("netmask is for IPv4; an IPv6 ip takes no netmask".into());
        }
        let family = |a: &str| a.parse::<IpAddr>().map(|x| x.is_ipv4() == ip.is_ipv4()).unwrap_or(true);
        if v.gateway.as_deref().is_some_and(|g| !family(g)) {
            errors.push("gateway and ip are of different address families".into());
        }
        if v.nameservers.iter().any(|n| !family(n)) {
            errors.push("nameservers and ip are of different address families".into());
        }
    }
    if let Some(b) = field("bmc_address") {
        if b.parse::<IpAddr>().is_ok() || is_hostname(&b.to_ascii_lowercase()) {
            v.bmc_address = Some(b)
        } else {
            errors.push(format!(
                "bmc_address {:?} is neither an IP address nor a host name",
                shorten(&b)
            ))
        }
    }
    if let Some(s) = field("bmc_secret") {
        if crate::render::names::is_dns1123_subdomain(&s) {
            v.bmc_secret = Some(s);
        } else {
            errors.push(format!("bmc_secret {:?} must name a Kubernetes Secret (lower-case letters, digits, dashes, dots), not hold a password", shorten(&s)));
        }
    }
    if let Some(w) = field("workflow") {
        if !w.is_empty()
            && w.len() <= 63
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            v.workflow = Some(w);
        } else {
            errors.push(format!("workflow {:?} is not a workflow name", shorten(&w)));
        }
    }
    if let Some(l) = field("location")
        && let Some(text) = clean(&l)
    {
        match label_value(&text) {
            Some(label) => {
                v.location = Some(text);
                v.location_label = Some(label);
            }
            None => errors.push(format!(
                "location {:?} has nothing usable as a label value",
                shorten(&l)
            )),
        }
    }
    if let Some(ls) = field("labels") {
        let mut labels = BTreeMap::new();
        for pair in split_list(&ls) {
            match pair.split_once('=') {
                Some((k, val)) if is_label_key(k) && (val.is_empty() || is_label_value(val)) => {
                    if k.starts_with("registrar.dev/") || k.starts_with("tinkerbell.org/") {
                        errors.push(format!("labels: {k:?} is reserved for Registrar and Tinkerbell"));
                    } else {
                        labels.insert(k.to_string(), val.to_string());
                    }
                }
                _ => errors.push(format!(
                    "labels: {:?} is not key=value with a Kubernetes label key and value",
                    shorten(pair)
                )),
            }
        }
        if labels.len() > 16 {
            errors.push("labels: at most 16".into());
        } else {
            v.labels = labels;
        }
    }
    ParsedRow {
        line,
        raw_mac: shorten(&raw_mac),
        mac,
        values: v,
        errors: std::mem::take(errors),
    }
}

fn shorten(s: &str) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

/// Lists inside one field: nameservers or labels, separated by spaces, `|`, `,` or `;`.
fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || matches!(c, '|' | ',' | ';'))
        .filter(|p| !p.is_empty())
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && !p.starts_with('-')
                && !p.ends_with('-')
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn netmask(s: &str) -> Option<String> {
    let prefix = s.strip_prefix('/').unwrap_or(s);
    if let Ok(n) = prefix.parse::<u8>() {
        if n <= 32 {
            let bits = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            return Some(Ipv4Addr::from(bits).to_string());
        }
        return None;
    }
    let a: Ipv4Addr = s.parse().ok()?;
    let bits = u32::from(a);
    // A mask is ones, then zeros.
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| a.to_string())
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| p.len() <= 253 && crate::render::names::is_dns1123_subdomain(p)) && is_label_value(name)
}

/// A free-text location as a label value: "DC1 / Rack 12" → "DC1-Rack-12".
fn label_value(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(63)
        .collect();
    let out = out.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(rows: &[ParsedRow]) -> Vec<(u32, String)> {
        rows.iter()
            .flat_map(|r| r.errors.iter().map(move |e| (r.line, e.clone())))
            .collect()
    }

    #[test]
    fn a_hand_made_file_with_bom_crlf_and_semicolons() {
        let text = "\u{feff}MAC;Hostname;IP;Netmask;Gateway;Nameservers;Location;Labels\r\n\
                    AA-BB-CC-DD-EE-01;Node-01;10.0.0.11;24;10.0.0.1;10.0.0.2 10.0.0.3;DC1 / Rack 12;team=infra\r\n\
                    aabb.ccdd.ee02;node-02;10.0.0.12;255.255.255.0;;;;\r\n";
        let rows = parse_csv(text.as_bytes()).unwrap();
        assert_eq!(errors(&rows), vec![]);
        assert_eq!(rows[0].mac.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(rows[0].line, 2);
        let v = &rows[0].values;
        assert_eq!(v.hostname.as_deref(), Some("node-01"));
        assert_eq!(v.netmask.as_deref(), Some("255.255.255.0"));
        assert_eq!(v.nameservers, vec!["10.0.0.2", "10.0.0.3"]);
        assert_eq!(v.location_label.as_deref(), Some("DC1-Rack-12"));
        assert_eq!(v.labels.get("team").map(String::as_str), Some("infra"));
        assert_eq!(rows[1].mac.unwrap().to_string(), "aa:bb:cc:dd:ee:02");
    }

    #[test]
    fn row_errors_are_precise_and_do_not_stop_the_other_rows() {
        let text = "mac,hostname,ip,labels\n\
                    aa:bb:cc:dd:ee:01,ok,10.0.0.1,\n\
                    not-a-mac,x,10.0.0.2,\n\
                    aa:bb:cc:dd:ee:03,bad_host!,10.0.0.300,\n\
                    AA:BB:CC:DD:EE:01,dup,,\n\
                    aa:bb:cc:dd:ee:05,y,,\"a=b,registrar.dev/mac=x\"\n";
        let rows = parse_csv(text.as_bytes()).unwrap();
        let e = errors(&rows);
        assert!(e.iter().any(|(l, m)| *l == 3 && m.contains("not-a-mac")), "{e:?}");
        assert!(e.iter().any(|(l, m)| *l == 4 && m.contains("hostname")), "{e:?}");
        assert!(
            e.iter().any(|(l, m)| *l == 4 && m.contains("ip \"10.0.0.300\"")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|(l, m)| *l == 5 && m.contains("duplicate of line 2")),
            "{e:?}"
        );
        assert!(e.iter().any(|(l, m)| *l == 6 && m.contains("reserved")), "{e:?}");
        assert!(rows[0].is_valid());
        assert_eq!(rows.iter().filter(|r| r.is_valid()).count(), 1);
    }

    #[test]
    fn file_level_problems_name_the_line() {
        assert_eq!(parse_csv(b"").unwrap_err(), ImportError::Empty);
        assert!(matches!(
            parse_csv(b"hostname,ip\nx,10.0.0.1\n").unwrap_err(),
            ImportError::NoMacColumn { .. }
        ));
        assert!(matches!(
            parse_csv(b"mac,colour\naa:bb:cc:dd:ee:01,red\n").unwrap_err(),
            ImportError::UnknownColumn { .. }
        ));
        assert!(matches!(
            parse_csv(b"mac,mac\n").unwrap_err(),
            ImportError::DuplicateColumn(_)
        ));
        // An unterminated quote swallows the rest of the file into one field.
        let rows = parse_csv(b"mac,hostname\n\"aa:bb:cc:dd:ee:01,x\naa:bb:cc:dd:ee:02,y\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].errors[0].starts_with("mac: "), "{:?}", rows[0].errors);
        assert_eq!(
            parse_csv(b"mac\r\n\xff\xfe\r\n").unwrap_err(),
            ImportError::NotText { line: 2 }
        );
    }

    #[test]
    fn quoted_separators_stay_in_their_field_and_extra_fields_are_named() {
        let rows =
            parse_csv(b"mac,location\naa:bb:cc:dd:ee:01,\"Rack 1, U2\"\naa:bb:cc:dd:ee:02,Rack 1, U2\n").unwrap();
        assert!(rows[0].is_valid());
        assert_eq!(rows[0].values.location.as_deref(), Some("Rack 1, U2"));
        assert!(rows[1].errors[0].contains("quote values"), "{:?}", rows[1].errors);
    }

    #[test]
    fn hostile_values_never_pass() {
        let rows = parse_csv("mac,hostname,bmc_secret,workflow,labels\naa:bb:cc:dd:ee:01,\"a\nb: c\",\"hunter2 password\",\"../etc\",\"x=<img>\"\n".as_bytes()).unwrap();
        assert_eq!(rows[0].errors.len(), 4, "{:?}", rows[0].errors);
    }

    #[test]
    fn json_rows() {
        let rows = parse_json(br#"[{"mac": "aa:bb:cc:dd:ee:01", "hostname": "n1", "labels": {"team": "infra"}, "nameservers": ["1.1.1.1"]}, {"mac": "x", "colour": "red"}]"#).unwrap();
        assert!(rows[0].is_valid());
        assert_eq!(rows[0].values.labels["team"], "infra");
        assert_eq!(rows[1].errors.len(), 2);
    }

    #[test]
    fn a_huge_or_hopeless_row_costs_bounded_errors() {
        let huge = "a ".repeat(MAX_FIELD);
        let rows = parse_csv(
            format!(
                "mac,nameservers,labels\naa:bb:cc:dd:ee:01,{huge},{}\n",
                "x ".repeat(1000)
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(
            rows[0].errors[0].contains("nameservers is longer than 4096 bytes"),
            "{:?}",
            rows[0].errors
        );
        assert_eq!(rows[0].errors.len(), MAX_ERRORS + 1, "{:?}", rows[0].errors);
        assert!(rows[0].errors.last().unwrap().starts_with("… and "));
    }

    #[test]
    fn address_families_do_not_mix_and_json_types_are_checked() {
        let rows =
            parse_csv(b"mac,ip,netmask,gateway,nameservers\naa:bb:cc:dd:ee:01,fd00::5,24,10.0.0.1,10.0.0.2\n").unwrap();
        assert_eq!(rows[0].errors.len(), 3, "{:?}", rows[0].errors);
        let rows = parse_json(br#"[{"mac": "aa:bb:cc:dd:ee:01", "netmask": 24, "labels": {"a": 1}}]"#).unwrap();
        assert!(
            rows[0].errors.iter().any(|e| e == "netmask must be a string"),
            "{:?}",
            rows[0].errors
        );
        assert!(
            rows[0].errors.iter().any(|e| e.starts_with("labels must be")),
            "{:?}",
            rows[0].errors
        );
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask("/20").as_deref(), Some("255.255.240.0"));
        assert_eq!(netmask("255.255.0.0").as_deref(), Some("255.255.0.0"));
        assert_eq!(netmask("255.0.255.0"), None);
        assert_eq!(netmask("33"), None);
    }
}
