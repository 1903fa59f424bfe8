//! Registrar: notices unknown bare-metal machines, renders their Tinkerbell manifests and
//! proposes them for review in a GitOps repository. See `docs/design.md` for the flow.

pub mod domain;
pub mod config;
pub mod render;
pub mod store;
