//! Step unique ids.

use milonga_sdk::Format;
use serde::Serialize;

use super::canonical::{self, canonical};
use super::scope::{fresh_nonce, Scope};
use super::Step;
use crate::error::{Error, Result};

/// The name of the step-id scheme. Every id hash starts with it; a change to what is hashed
/// means a new scheme name (and new ids), never a silent change.
pub const ID_SCHEME: &str = "milonga.step-id.v1";

/// Bytes of the blake3 digest kept in an id (192 bits), encoded in base58.
const ID_DIGEST_BYTES: usize = 24;

#[derive(Serialize)]
struct Header<'a> {
    scheme: &'a str,
    encoding: &'a str,
    name: &'a str,
    version: Option<&'a str>,
    format_id: &'a str,
    format_version: u32,
}

thread_local! {
    /// Set when an id computed on this thread involved a non-deterministic step (its own or an
    /// input's): such ids change with every run and must not be cached by a [`StepRef`].
    ///
    /// [`StepRef`]: super::StepRef
    pub(crate) static NONDETERMINISTIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn valid_segment(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The unique id of `step` and the unique ids of the steps it references.
pub(crate) fn unique_id<S: Step>(step: &S) -> Result<(String, Vec<String>)> {
    let invalid = |reason: String| Error::InvalidStep {
        name: S::NAME.into(),
        reason,
    };
    if !S::NAME.split("::").all(valid_segment) {
        return Err(invalid(
            "NAME must be `Name` or `path::Name` with segments of ASCII letters, digits and _"
                .into(),
        ));
    }
    let short = S::NAME.rsplit("::").next().unwrap_or(S::NAME);
    if let Some(v) = S::VERSION {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(format!(
                "VERSION {v:?} must be ASCII letters and digits"
            )));
        }
    }
    let format = step.format();
    if format.id().is_empty() || format.id().len() > 255 {
        return Err(invalid(format!(
            "format id {:?} must be 1..=255 bytes",
            format.id()
        )));
    }
    let header = Header {
        scheme: ID_SCHEME,
        encoding: canonical::SCHEME,
        name: S::NAME,
        version: S::VERSION,
        format_id: format.id(),
        format_version: format.version(),
    };
    let head = canonical(&header).map_err(|e| invalid(e.to_string()))?;
    let args = canonical(step).map_err(|e| invalid(e.to_string()))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&head.bytes);
    hasher.update(&args.bytes);
    if !S::DETERMINISTIC {
        // A fresh id per run: the run's nonce (or a fresh one outside any run).
        NONDETERMINISTIC.with(|n| n.set(true));
        let nonce = Scope::current().map_or_else(fresh_nonce, |s| s.nonce);
        hasher.update(b"nondeterministic");
        hasher.update(&nonce);
    }
    let digest = hasher.finalize();
    let hash = bs58::encode(&digest.as_bytes()[..ID_DIGEST_BYTES]).into_string();
    let id = match S::VERSION {
        Some(v) => format!("{short}-{v}-{hash}"),
        None => format!("{short}-{hash}"),
    };
    Ok((id, args.step_refs))
}
