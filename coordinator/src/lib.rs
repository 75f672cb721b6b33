//! hav-coordinator library.
