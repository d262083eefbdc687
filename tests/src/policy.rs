//! Policy and audit helpers for the end-to-end tests.
