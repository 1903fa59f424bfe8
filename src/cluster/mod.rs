//! The Kubernetes side: which MACs the cluster's Hardware already holds, and the Hardware
//! that Tinkerbell's own auto discovery creates (whose agent attributes are facts).
//!
//! Hardware is read through a kube-runtime watcher: it lists, then watches, and relists on
//! its own after a dropped watch or a 410 Gone, so the index never misses a MAC for long.

pub mod hardware;

use kube::api::ApiResource;

/// Tinkerbell's `Hardware` (`hardware.tinkerbell.org/v1alpha1`), read as dynamic objects.
pub fn hardware_resource() -> ApiResource {
    ApiResource {
        group: "tinkerbell.org".into(),
        version: "v1alpha1".into(),
        api_version: "tinkerbell.org/v1alpha1".into(),
        kind: "Hardware".into(),
        plural: "hardware".into(),
    }
}

/// Set by tink-server's auto discovery on the Hardware it creates.
pub const AUTO_DISCOVERED: &str = "tinkerbell.org/auto-discovered";
/// Where tink-server puts the Tink Agent's attributes (JSON).
pub const AGENT_ATTRIBUTES: &str = "tinkerbell.org/agent-attributes";
/// Marks Registrar's own temporary discovery Hardware.
pub const TEMPORARY: &str = "registrar.dev/temporary";
