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
    identity(step).map(|i| (i.unique_id, i.step_refs))
}

/// A step's unique id with its pre-image.
pub(crate) struct Identity {
    /// The unique id.
    pub(crate) unique_id: String,
    /// The unique ids of the steps the arguments refer to.
    pub(crate) step_refs: Vec<String>,
    /// The canonical encoding of the header (scheme, name, version, format).
    pub(crate) header: Vec<u8>,
    /// The canonical encoding of the arguments.
    pub(crate) args: Vec<u8>,
}

/// The unique id of `step` and its pre-image.
pub(crate) fn identity<S: Step>(step: &S) -> Result<Identity> {
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
    Ok(Identity {
        unique_id: id,
        step_refs: args.step_refs,
        header: head.bytes,
        args: args.bytes,
    })
}

/// The content key of a step: its pre-image with every step reference replaced by the manifest
/// id of that upstream step's stored result (`manifest_of`; `None` if any has none). Two
/// deterministic steps with equal content keys run the same code on byte-identical inputs, so
/// one's result may stand for the other's (early cutoff).
pub(crate) fn content_key(
    header: &[u8],
    args: &[u8],
    manifest_of: &mut dyn FnMut(&str) -> Option<String>,
) -> Option<String> {
    let tree = super::preimage::Arg::decode(args).ok()?;
    let mut replaced = Vec::with_capacity(args.len());
    tree.encode_with(&mut replaced, manifest_of)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"milonga.content-key.v1");
    hasher.update(&(header.len() as u64).to_le_bytes());
    hasher.update(header);
    hasher.update(&replaced);
    Some(hasher.finalize().to_hex().to_string())
}
