//! havctl library.
