//! # milonga
//!
//! A streaming-first, content-addressed storage engine for cached pipeline results.
