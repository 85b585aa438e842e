//! Formats shared by the kit's tests.

pub mod embeddings;
