//! `dmidecode -s <keyword>` answers: the DMI identity where lshw saw none or a placeholder.

use serde_json::Value;

use super::{kind, string};
use crate::domain::facts::{Facts, clean};

/// The `dmidecode -s` keywords read, and which fact each fills (first answer wins).
pub const DMI_KEYWORDS: &[&str] = &[
    "system-manufacturer",
    "system-product-name",
    "system-serial-number",
    "system-uuid",
    "baseboard-manufacturer",
    "baseboard-product-name",
    "baseboard-serial-number",
    "chassis-manufacturer",
    "chassis-serial-number",
    "chassis-asset-tag",
];

/// Fills vendor, product, serial and UUID from `dmidecode -s` answers where the facts have
/// none (lshw saw nothing, or a placeholder, which [`clean`] drops). The object maps keywords
/// to strings (or null); unknown keywords are ignored. Serial: the system's, else the
/// chassis', else the baseboard's, as Tink Agent reads them.
pub fn apply_dmidecode(facts: &mut Facts, dmi: &Value) -> Result<(), String> {
    let Value::Object(map) = dmi else {
        return Err(format!(
            "dmidecode must be an object of `dmidecode -s` keywords and their answers (such as {{\"system-serial-number\": \"…\"}}), not {}",
            kind(dmi)
        ));
    };
    let mut answers = std::collections::HashMap::new();
    for key in DMI_KEYWORDS {
        if let Some(v) = string(map, key, "dmidecode")?.and_then(clean) {
            answers.insert(*key, v);
        }
    }
    let first = |keys: &[&str]| keys.iter().find_map(|k| answers.get(k).cloned());
    if facts.vendor.is_none() {
        facts.vendor = first(&["system-manufacturer", "chassis-manufacturer", "baseboard-manufacturer"]);
    }
    if facts.product.is_none() {
        facts.product = first(&["system-product-name", "baseboard-product-name"]);
    }
    if facts.serial.is_none() {
        facts.serial = first(&[
            "system-serial-number",
            "chassis-serial-number",
            "baseboard-serial-number",
        ]);
    }
    if facts.uuid.is_none() {
        facts.uuid = first(&["system-uuid"]).map(|u| u.to_ascii_lowercase());
    }
    if facts.asset_tag.is_none() {
        facts.asset_tag = first(&["chassis-asset-tag"]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dmidecode_fills_only_what_lshw_left_open() {
        let dmi = json!({
            "system-manufacturer": "Supermicro", "system-product-name": "To Be Filled By O.E.M.",
            "system-serial-number": "Default string", "system-uuid": "969EBC00-FC71-11E9-8000-AC1F6BDC19C2",
            "baseboard-product-name": "X11DPH-T", "baseboard-serial-number": "VM194S600123",
            "chassis-serial-number": "C8160KL12A34567", "processor-family": ["ignored", "unknown keyword"]
        });
        let mut f = Facts {
            vendor: Some("Dell Inc.".into()),
            ..Facts::default()
        };
        apply_dmidecode(&mut f, &dmi).unwrap();
        assert_eq!(f.vendor.as_deref(), Some("Dell Inc."), "lshw's answer stays");
        assert_eq!(
            f.product.as_deref(),
            Some("X11DPH-T"),
            "placeholder skipped: the baseboard's"
        );
        assert_eq!(
            f.serial.as_deref(),
            Some("C8160KL12A34567"),
            "placeholder skipped: the chassis'"
        );
        assert_eq!(f.uuid.as_deref(), Some("969ebc00-fc71-11e9-8000-ac1f6bdc19c2"));
        let mut f = Facts::default();
        apply_dmidecode(
            &mut f,
            &json!({"system-serial-number": null, "system-uuid": "00000000-0000-0000-0000-000000000000"}),
        )
        .unwrap();
        assert_eq!(f, Facts::default());
    }

    #[test]
    fn dmidecode_hostile_strings_are_cleaned_and_wrong_types_named() {
        let mut f = Facts::default();
        let dmi = json!({"system-serial-number": "S1\"\\\n<script>alert(1)</script>\nspec: {}\u{202e}", "system-manufacturer": "z".repeat(5000)});
        apply_dmidecode(&mut f, &dmi).unwrap();
        assert_eq!(f.serial.as_deref(), Some("S1\"\\ <script>alert(1)</script> spec: {}"));
        assert_eq!(f.vendor.unwrap().chars().count(), crate::domain::facts::MAX_FACT_CHARS);
        for (v, needle) in [
            (json!("S1"), "dmidecode must be an object of `dmidecode -s` keywords"),
            (json!(["S1"]), "not an array"),
            (
                json!({"system-serial-number": 12}),
                "dmidecode.system-serial-number must be a string, not a number",
            ),
            (
                json!({"system-uuid": {"x": 1}}),
                "dmidecode.system-uuid must be a string, not an object",
            ),
        ] {
            let err = apply_dmidecode(&mut Facts::default(), &v).unwrap_err();
            assert!(err.contains(needle), "{v} -> {err}");
        }
    }

    #[test]
    fn the_chassis_asset_tag_is_an_identity_unless_it_is_a_placeholder() {
        let mut f = Facts::default();
        apply_dmidecode(&mut f, &json!({"chassis-asset-tag": "ACME-004711"})).unwrap();
        assert_eq!(f.asset_tag.as_deref(), Some("ACME-004711"));
        for placeholder in [
            "No Asset Tag",
            "Default string",
            "To Be Filled By O.E.M.",
            "Asset-1234567890",
        ] {
            let mut f = Facts::default();
            apply_dmidecode(&mut f, &json!({"chassis-asset-tag": placeholder})).unwrap();
            assert_eq!(f.asset_tag, None, "{placeholder}");
        }
    }
}
