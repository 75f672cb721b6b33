//! havctl: the operator's tool for a hav fleet.

pub mod import;
