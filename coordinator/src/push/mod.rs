//! The push pipeline: one typed value per stage, each made once and handed on.
//!
//! ```text
//! PushConfigRequest ─▶ Proposed ─validate─▶ ValidatedPush ─Desired::push(latest)───┐
//! RollbackRequest ─▶ stored version ──────────────────Desired::rollback(latest)────┤
//!                                                                                  ▼
//!          Desired ─apply─▶ diff ─▶ version committed ─▶ rollout per group ─▶ kept version
//! ```
//!
//! Guarantees: nothing is stored or sent before the whole push validates; a node config is
//! parsed once (a fleet file is parsed once and its nodes' configs are validated as documents,
//! never printed and read back); the canonical text made then is what is stored, diffed and
//! sent; what a fleet file laid out per group is stored in the version, next to the configs it
//! came with.

mod apply;
mod validate;

pub use apply::{Desired, apply};
pub use validate::{Proposed, ValidatedNode, ValidatedPush, refusal, validate};
