//! Registrar: notices unknown bare-metal machines, renders their Tinkerbell manifests and
//! proposes them for review in a GitOps repository. See `docs/design.md` for the flow:
//!
//! sources → domain (Mac, Facts, Machine) → store → propose (render → git → forge) ← server

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod ipam;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod propose;
pub mod render;
pub mod server;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod supervisor;
