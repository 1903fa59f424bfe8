//! `POST /api/v1/sightings`: DHCP sightings forwarded by `registrar snoop`, which runs on
//! the provisioning network's node while this API stays on the pod network.
//!
//! The snooper's token allows this and nothing else. What it forwards is treated like a
//! packet off the wire: every field is checked again here, a batch with anything wrong is
//! refused whole (400, nothing stored), and a full backlog answers 503 so the snooper
//! sends the batch again later instead of this process buffering without bound.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::domain::{Mac, Sighting};

/// At most this many sightings in one request (the snooper sends fewer).
pub const MAX_BATCH: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    pub sightings: Vec<ForwardedSighting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedSighting {
    pub mac: String,
    #[serde(default)]
    pub sighting: Sighting,
}

#[utoipa::path(
    post,
    path = "/api/v1/sightings",
    tag = "reports",
    request_body(content = Object, content_type = "application/json", description = "{\"sightings\": [{\"mac\": …, \"sighting\": {…}}]}, at most 512"),
    responses((status = 202, description = "recorded (known MACs skipped)", body = Object), (status = 400, description = "a bad entry: nothing stored"), (status = 401, description = "no token, or not one that may do this"), (status = 503, description = "the backlog is full: send again")),
    security(("snoop" = []))
)]
pub async fn post_sightings(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let Some(sink) = state.sightings.clone() else {
        return Err(ApiError::not_found(
            "this Registrar takes no forwarded sightings (auth.snoop_token is not set)",
        ));
    };
    let forwarded: Forwarded = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "send {{\"sightings\": [{{\"mac\": …, \"sighting\": {{…}}}}]}}: {e}"
        ))
    })?;
    if forwarded.sightings.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} sightings in one request; at most {MAX_BATCH}",
            forwarded.sightings.len()
        )));
    }
    let mut checked = Vec::with_capacity(forwarded.sightings.len());
    for (i, f) in forwarded.sightings.into_iter().enumerate() {
        let mac = Mac::parse(&f.mac).map_err(|e| ApiError::bad_request(format!("sightings[{i}].mac: {e}")))?;
        let sighting =
            checked_sighting(f.sighting).map_err(|e| ApiError::bad_request(format!("sightings[{i}].{e}")))?;
        checked.push((mac, sighting));
    }
    // Known machines are skipped here, as the in-process listener skips them.
    checked.retain(|(mac, _)| !state.known.contains(mac));
    let accepted = checked.len();
    if accepted > 0 {
        // All or none: a partial batch would leave the snooper unsure what to send again.
        let permits = match sink.try_reserve_many(accepted) {
            Ok(permits) => permits,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => {
                return Err(ApiError::internal("the sightings recorder has stopped"));
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {
                state.metrics.dhcp_dropped("backlog");
                let mut busy = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "busy", "message": "the sightings backlog is full; send them again shortly"})),
                )
                    .into_response();
                busy.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                return Ok(busy);
            }
        };
        for (permit, seen) in permits.zip(checked) {
            permit.send(seen);
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))).into_response())
}

/// A forwarded sighting's fields, held to what a DHCP packet can carry.
fn checked_sighting(s: Sighting) -> Result<Sighting, String> {
    let text = |field: &str, v: Option<String>| -> Result<Option<String>, String> {
        match v {
            None => Ok(None),
            // Hex of 64 bytes at most, as the listener renders an unprintable option.
            Some(v) if v.chars().count() > 191 => Err(format!("{field}: longer than a DHCP option")),
            Some(v) => Ok(crate::domain::facts::clean(&v)),
        }
    };
    let arch = match s.arch {
        Some(a) if a.len() <= 16 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => Some(a),
        Some(_) => return Err("sighting.arch: not an architecture".into()),
        None => None,
    };
    let uuid = match s.uuid {
        Some(u) if is_uuid(&u) => Some(u.to_ascii_lowercase()),
        Some(_) => return Err("sighting.uuid: not a UUID".into()),
        None => None,
    };
    let relay = match s.relay {
        Some(r) => {
            r.address
                .parse::<std::net::Ipv4Addr>()
                .map_err(|_| "sighting.relay.address: not an IPv4 address".to_string())?;
            Some(crate::domain::Relay {
                address: r.address,
                circuit_id: text("sighting.relay.circuit_id", r.circuit_id)?,
                remote_id: text("sighting.relay.remote_id", r.remote_id)?,
            })
        }
        None => None,
    };
    Ok(Sighting {
        arch,
        uefi: s.uefi,
        uuid,
        hostname: text("sighting.hostname", s.hostname)?,
        vendor_class: text("sighting.vendor_class", s.vendor_class)?,
        user_class: text("sighting.user_class", s.user_class)?,
        netboot: s.netboot,
        relay,
    })
}

/// `8-4-4-4-12` hexadecimal digits, as the listener writes option 97.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_fields_are_held_to_what_a_packet_carries() {
        let good = Sighting {
            arch: Some("x86_64".into()),
            uefi: Some(true),
            uuid: Some("4C4C4544-0042-3010-8031-B4C04F564433".into()),
            hostname: Some("  pxe\u{7}client ".into()),
            relay: Some(crate::domain::Relay {
                address: "10.0.0.1".into(),
                circuit_id: Some("Ethernet1/12".into()),
                remote_id: None,
            }),
            ..Default::default()
        };
        let checked = checked_sighting(good).unwrap();
        assert_eq!(checked.uuid.as_deref(), Some("4c4c4544-0042-3010-8031-b4c04f564433"));
        assert_eq!(checked.hostname.as_deref(), Some("pxe client"));
        for bad in [
            Sighting {
                arch: Some("x86_64\n<script>".into()),
                ..Default::default()
            },
            Sighting {
                uuid: Some("not-a-uuid".into()),
                ..Default::default()
            },
            Sighting {
                hostname: Some("h".repeat(300)),
                ..Default::default()
            },
            Sighting {
                relay: Some(crate::domain::Relay {
                    address: "evil.example".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ] {
            assert!(checked_sighting(bad).is_err());
        }
    }
}
