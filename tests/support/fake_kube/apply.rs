//! Server-side apply: field ownership per manager and operation, `managedFields`.

use super::*;

/// What an apply may set through this endpoint: no status through the object, only status
/// (plus identity) through `/status`.
pub(super) fn scoped(config: &Value, sub: Option<&str>) -> Value {
    let mut c = config.clone();
    let m = c.as_object_mut().unwrap();
    match sub {
        None => {
            m.remove("status");
        }
        Some(_) => m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
    }
    if sub.is_some()
        && let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| k == "name" || k == "namespace");
    }
    c
}

// ---- field ownership (server-side apply) ----

pub(super) fn escape_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

pub(super) fn unescape_token(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// Leaf fields an owner can hold, by JSON pointer: scalars, lists (atomic) and empty maps.
/// Of metadata only labels and annotations are fields; apiVersion and kind are identity.
pub(super) fn leaves(obj: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, at: String, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    walk(child, format!("{at}/{}", escape_token(k)), out);
                }
            }
            other => {
                out.insert(at, other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for part in ["labels", "annotations"] {
                        if let Some(x) = v.get(part) {
                            walk(x, format!("/metadata/{part}"), &mut out);
                        }
                    }
                }
                _ => walk(v, format!("/{}", escape_token(k)), &mut out),
            }
        }
    }
    out
}

/// An update owns every leaf it set or changed, alone: other owners lose it.
pub(super) fn take_updates(
    fields: &mut BTreeMap<String, BTreeSet<Owner>>,
    before: &Value,
    after: &Value,
    owner: &Owner,
) {
    let old = leaves(before);
    for (p, v) in leaves(after) {
        if old.get(&p) != Some(&v) {
            fields.insert(p, BTreeSet::from([owner.clone()]));
        }
    }
}

/// Forgets ownership of fields that are no longer leaves of the object.
pub(super) fn normalise(fields: &mut BTreeMap<String, BTreeSet<Owner>>, obj: &Value) {
    let now = leaves(obj);
    fields.retain(|p, owners| now.contains_key(p) && !owners.is_empty());
}

/// `metadata.managedFields` in the apiserver's FieldsV1 shape (`f:<name>` maps).
pub(super) fn managed_fields(fields: &BTreeMap<String, BTreeSet<Owner>>) -> Value {
    let mut per_owner: BTreeMap<&Owner, Value> = BTreeMap::new();
    for (p, owners) in fields {
        for o in owners {
            let mut node = per_owner.entry(o).or_insert_with(|| json!({}));
            for token in p.split('/').skip(1) {
                node = node
                    .as_object_mut()
                    .unwrap()
                    .entry(format!("f:{}", unescape_token(token)))
                    .or_insert_with(|| json!({}));
            }
        }
    }
    Value::Array(
        per_owner
            .into_iter()
            .map(|((manager, op), f)| json!({"manager": manager, "operation": op, "apiVersion": API_VERSION, "fieldsType": "FieldsV1", "fieldsV1": f}))
            .collect(),
    )
}

pub(super) fn pointer_tokens(p: &str) -> Vec<String> {
    p.split('/').skip(1).map(unescape_token).collect()
}

/// Removes the field at `p` and any map above it left empty (never `metadata` itself).
pub(super) fn remove_field(obj: &mut Value, p: &str) {
    let tokens = pointer_tokens(p);
    for depth in (1..=tokens.len()).rev() {
        let parent: String = tokens[..depth - 1]
            .iter()
            .map(|t| format!("/{}", escape_token(t)))
            .collect();
        let Some(Value::Object(map)) = obj.pointer_mut(&parent) else {
            return;
        };
        let last = &tokens[depth - 1];
        let emptied = map.get(last).and_then(Value::as_object).is_some_and(|o| o.is_empty());
        if (depth < tokens.len() && !emptied) || (depth == 1 && last == "metadata") {
            return;
        }
        map.remove(last);
    }
}

/// Maps merge key by key; anything else (lists included) is replaced.
pub(super) fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Server-side apply of `config` by `owner`: a changed value another owner holds is a
/// conflict unless forced (then it changes hands); fields this owner applied before and
/// leaves out now are released, and removed when nobody else holds them.
#[allow(clippy::type_complexity)]
pub(super) fn server_side_apply(
    current: &Value,
    fields: &BTreeMap<String, BTreeSet<Owner>>,
    config: &Value,
    owner: &Owner,
    force: bool,
) -> Result<(Value, BTreeMap<String, BTreeSet<Owner>>), Vec<(String, String)>> {
    let mut obj = current.clone();
    let mut fields = fields.clone();
    let wanted = leaves(config);
    let mut conflicts = vec![];
    for (p, v) in &wanted {
        let others: Vec<String> = fields
            .get(p)
            .into_iter()
            .flatten()
            .filter(|o| *o != owner)
            .map(|(m, op)| format!("\"{m}\" ({op})"))
            .collect();
        let differs = obj.pointer(p).is_some_and(|cur| cur != v);
        if differs && !others.is_empty() {
            conflicts.push((p.clone(), others.join(", ")));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (p, _) in conflicts {
        fields.insert(p, BTreeSet::new());
    }
    let released: Vec<String> = fields
        .iter()
        .filter(|(p, o)| o.contains(owner) && !wanted.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    for p in released {
        let owners = fields.get_mut(&p).unwrap();
        owners.remove(owner);
        if owners.is_empty() {
            remove_field(&mut obj, &p);
            fields.remove(&p);
        }
    }
    deep_merge(&mut obj, config);
    for p in wanted.keys() {
        fields.entry(p.clone()).or_default().insert(owner.clone());
    }
    Ok((obj, fields))
}

// ---- merge patch (RFC 7386) and JSON patch (RFC 6902) ----
