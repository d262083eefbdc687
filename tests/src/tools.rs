//! Helpers for driving PKCS#11 tools and the conformance probe in the end-to-end tests.
