//! RFC 7386 merge patches and RFC 6902 JSON patches.

use super::*;

pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[derive(Debug)]
pub(super) struct JsonPatchOp {
    op: String,
    path: String,
    from: Option<String>,
    value: Option<Value>,
}

pub(super) fn json_patch_decode(body: &[u8]) -> Result<Vec<JsonPatchOp>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("the JSON patch is not JSON: {e}"))?;
    let Value::Array(items) = doc else {
        return Err("a JSON patch is an array of operations".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let op = item["op"].as_str().ok_or(format!("operation {i}: no \"op\""))?;
            if !matches!(op, "add" | "remove" | "replace" | "move" | "copy" | "test") {
                return Err(format!("operation {i}: unexpected kind of operation {op:?}"));
            }
            let path = item["path"].as_str().ok_or(format!("operation {i}: no \"path\""))?;
            let from = item.get("from").and_then(Value::as_str).map(str::to_string);
            if matches!(op, "move" | "copy") && from.is_none() {
                return Err(format!("operation {i}: {op} needs \"from\""));
            }
            let value = item.get("value").cloned();
            if matches!(op, "add" | "replace" | "test") && value.is_none() {
                return Err(format!("operation {i}: {op} needs \"value\""));
            }
            Ok(JsonPatchOp {
                op: op.into(),
                path: path.into(),
                from,
                value,
            })
        })
        .collect()
}

pub(super) fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not a JSON pointer"));
    }
    Ok(pointer_tokens(p))
}

pub(super) fn array_index(token: &str, len: usize, appending: bool) -> Result<usize, String> {
    if appending && token == "-" {
        return Ok(len);
    }
    let valid =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid {
        token.parse().map_err(|_| format!("index {token:?} out of range"))?
    } else {
        return Err(format!("{token:?} is not an array index"));
    };
    if i > len || (!appending && i == len) {
        return Err(format!("index {i} out of range (length {len})"));
    }
    Ok(i)
}

pub(super) fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String], path: &str) -> Result<&'a mut Value, String> {
    let mut node = doc;
    for t in &tokens[..tokens.len() - 1] {
        node = match node {
            Value::Object(m) => m.get_mut(t.as_str()),
            Value::Array(a) => {
                let i = array_index(t, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or(format!("missing value at {path:?}: no {t:?}"))?;
    }
    Ok(node)
}

pub(super) fn jp_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = parse_pointer(path)?;
    let Some(last) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, &tokens, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => {
            return Err(format!(
                "cannot add at {path:?}: the parent is neither an object nor an array"
            ));
        }
    }
    Ok(())
}

pub(super) fn jp_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = parse_pointer(path)?;
    let Some(last) = tokens.last() else {
        return Err("cannot remove the whole document".into());
    };
    match parent_mut(doc, &tokens, path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or(format!("cannot remove {path:?}: it does not exist")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!(
            "cannot remove {path:?}: the parent is neither an object nor an array"
        )),
    }
}

pub(super) fn json_patch_apply(doc: &Value, ops: &[JsonPatchOp]) -> Result<Value, String> {
    let mut doc = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let at = |e: String| format!("operation {i} ({} {}): {e}", op.op, op.path);
        match op.op.as_str() {
            "add" => jp_add(&mut doc, &op.path, op.value.clone().unwrap()).map_err(at)?,
            "remove" => {
                jp_remove(&mut doc, &op.path).map_err(at)?;
            }
            "replace" => {
                parse_pointer(&op.path).map_err(at)?;
                if doc.pointer(&op.path).is_none() {
                    return Err(at("the value to replace does not exist".into()));
                }
                *doc.pointer_mut(&op.path).unwrap() = op.value.clone().unwrap();
            }
            "move" => {
                let from = op.from.as_deref().unwrap();
                if op.path.starts_with(&format!("{from}/")) {
                    return Err(at(format!("cannot move {from:?} into its own child")));
                }
                let v = jp_remove(&mut doc, from).map_err(at)?;
                jp_add(&mut doc, &op.path, v).map_err(at)?;
            }
            "copy" => {
                let from = op.from.as_deref().unwrap();
                parse_pointer(from).map_err(at)?;
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| at(format!("nothing to copy at {from:?}")))?;
                jp_add(&mut doc, &op.path, v).map_err(at)?;
            }
            "test" => {
                parse_pointer(&op.path).map_err(at)?;
                if doc.pointer(&op.path) != op.value.as_ref() {
                    return Err(at("test failed".into()));
                }
            }
            _ => unreachable!("decoded"),
        }
    }
    Ok(doc)
}
