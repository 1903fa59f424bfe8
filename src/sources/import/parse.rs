//! Reading an import file, CSV or JSON, into rows; file-level problems stop it, row problems
//! are kept in each row.

use std::collections::HashMap;

use super::fields::row_from;
use super::{COLUMNS, ImportError, MAX_ERRORS, MAX_FIELD, MAX_ROWS, ParsedRow};
use crate::domain::{Expected, Mac};

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
    fn rack_and_unit_are_kept_for_name_patterns_and_checked() {
        let rows = parse_csv(b"mac,rack,u\naa:bb:cc:dd:ee:01,r12,U7\naa:bb:cc:dd:ee:02,\"r1\nspec: {}\",0\n").unwrap();
        let v = rows[0].values.clone();
        assert_eq!((v.rack.as_deref(), v.u), (Some("r12"), Some(7)));
        let e = errors(&rows);
        assert!(e.iter().any(|(l, m)| *l == 3 && m.starts_with("rack ")), "{e:?}");
        assert!(e.iter().any(|(l, m)| *l == 3 && m.starts_with("u ")), "{e:?}");
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
}
