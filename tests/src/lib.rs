//! Shared helpers for hsm end-to-end tests.
