//! Integration tests for milonga.
