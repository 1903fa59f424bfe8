//! Turn the outside world into detections and facts. Sources decide nothing about
//! proposals: they parse, bound and normalise, and hand over to the store.

pub mod dhcp;
pub mod import;
pub mod report;
pub mod smee;
