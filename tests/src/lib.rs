//! Shared harness for the cross-process tests: network namespaces named with a per-run prefix,
//! bridges and veths inside them, and processes started there; everything removed on drop.
