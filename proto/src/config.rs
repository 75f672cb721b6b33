//! Node and fleet configuration schema (filled in by the config work).
