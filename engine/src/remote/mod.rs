//! Remote workspaces on S3-compatible object storage.

pub(crate) mod lease;
pub(crate) mod meta;
