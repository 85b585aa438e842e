//! Step records, runs, provenance and partial files as objects under a remote workspace's
//! prefix, written with conditional writes (the remote side of the
//! [`Metadata`](crate::workspace::Metadata) seam). Layout and reasoning in docs/FORMAT.md,
//! "Remote metadata".
//!
//! - `meta/v1/steps/XX.json`: one of 256 shards (`XX` = the first byte of blake3(unique id), in
//!   hex) holding the full records of its steps. Every change is a read-modify-write made
//!   conditional on the version read (If-Match), retried on a conflict: a listing reads at most
//!   256 objects whatever the number of steps, and a step's transition rewrites one shard.
//! - `meta/v1/partials/UID/SEQ-NONCE.json`: one immutable object per durable file of an
//!   artifact being written, created if absent.
//! - `meta/v1/runs/NAME.json`: one object per run, created if absent (the name is taken once).
//! - `meta/v1/provenance/ID.json`, `meta/v1/content/KEY.json` (early cutoff index),
//!   `meta/v1/leases/UID.json` (see [`super::lease`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use milonga_sdk::{ContentId, FileEntry};
use serde::{Deserialize, Serialize};

use super::lease::RemoteLeases;
use crate::error::{Error, Result};
use crate::workspace::{
    now_millis, Metadata, NewRecord, NewRunStep, Provenance, RunStep, RunSummary, StepInfo,
    StepState, StoredRun,
};

/// The version of an object as the store reports it (an ETag or a version id), for
/// conditional updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvVersion(pub(crate) String);

/// An object read with its version.
pub(crate) struct KvObject {
    /// Its bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its version, for a conditional update.
    pub(crate) version: KvVersion,
}

/// A listed object.
#[derive(Debug, Clone)]
pub(crate) struct KvEntry {
    /// Its key, relative to the workspace prefix.
    pub(crate) key: String,
}

/// Small objects with conditional writes: what remote metadata and leases need from the
/// object store. Keys are relative to the workspace's prefix.
pub(crate) trait Kv: Send + Sync + 'static {
    /// The URL of `key`, for messages.
    fn describe(&self, key: &str) -> String;
    /// The object at `key` with its version, or `None`.
    fn get(&self, key: &str) -> Result<Option<KvObject>>;
    /// Creates `key` if it does not exist (If-None-Match: *): its version, or `None` if it
    /// exists already.
    fn create(&self, key: &str, bytes: &[u8]) -> Result<Option<KvVersion>>;
    /// Replaces `key` if its version is still `version` (If-Match): the new version, or
    /// `None` if it changed or vanished.
    fn update(&self, key: &str, bytes: &[u8], version: &KvVersion) -> Result<Option<KvVersion>>;
    /// Writes `key` whatever is there.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Removes `key` (a missing key is success).
    fn delete(&self, key: &str) -> Result<()>;
    /// Every object whose key starts with `prefix`, ordered by key.
    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>>;
}

/// The metadata layout version, in every key (`meta/v1/…`).
pub(crate) const META_ROOT: &str = "meta/v1";
/// How many shards step records are spread over.
pub(crate) const STEP_SHARDS: usize = 256;
/// How many shards a listing reads at once.
const LIST_THREADS: usize = 8;

/// The shard key of a step.
pub(crate) fn shard_key(unique_id: &str) -> String {
    let h = blake3::hash(unique_id.as_bytes());
    let shard = usize::from(h.as_bytes()[0]) % STEP_SHARDS;
    format!("{META_ROOT}/steps/{shard:02x}.json")
}

fn partial_prefix(unique_id: &str) -> String {
    format!("{META_ROOT}/partials/{unique_id}/")
}

fn run_key(name: &str) -> String {
    format!("{META_ROOT}/runs/{name}.json")
}

fn provenance_key(id: &str) -> String {
    format!("{META_ROOT}/provenance/{id}.json")
}

fn content_key_key(key: &str) -> String {
    format!("{META_ROOT}/content/{key}.json")
}

/// One step record as stored in its shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    step_type: String,
    version: Option<String>,
    state: String,
    manifest_id: Option<String>,
    format_id: String,
    format_version: u32,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    error: Option<String>,
    metadata: serde_json::Value,
    attempts: u32,
    owner: Option<String>,
    dependencies: Vec<String>,
    /// The id pre-image, in hex.
    args: Option<String>,
    nondeterministic: bool,
    provenance_id: Option<String>,
    content_key: Option<String>,
    reused_from: Option<String>,
    last_access: Option<i64>,
    /// When the record was first written (orders records for `explain`).
    created_at: i64,
    /// The fencing token of the lease under which the record was last written by its runner.
    token: Option<u64>,
    /// The result's total size in bytes, once completed.
    #[serde(default)]
    result_size: Option<u64>,
}

/// A shard: the records of the steps whose id hashes to it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shard {
    records: BTreeMap<String, Record>,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunDoc {
    name: String,
    started_at: i64,
    ended_at: Option<i64>,
    provenance_id: Option<String>,
    steps: Vec<RunDocStep>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunDocStep {
    unique_id: String,
    name: Option<String>,
    target: bool,
}

/// A durable file of an artifact being written, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartialDoc {
    name: String,
    id: String,
    len: u64,
}

/// The early-cutoff index entry of a content key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContentDoc {
    unique_id: String,
    manifest_id: String,
}

/// Step records, runs and partial files in an object store (see the module docs).
pub(crate) struct RemoteMeta {
    kv: Arc<dyn Kv>,
    leases: Arc<RemoteLeases>,
    /// Provenance records already read, shared by the records that name them.
    provenance_cache: Mutex<HashMap<String, Arc<Provenance>>>,
    current_provenance: std::sync::OnceLock<String>,
    /// Partial-file entries already read, by key (their objects never change: keys carry a
    /// nonce of the writer).
    partial_cache: Mutex<HashMap<String, FileEntry>>,
    /// The next sequence number of each step this process writes partial files for.
    partial_seq: Mutex<HashMap<String, u64>>,
    /// This process's nonce in partial-file keys.
    nonce: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn backoff(attempt: u32) {
    let ms = 2 + u64::from(attempt.min(10)) * 3 + u64::from(std::process::id() % 5);
    std::thread::sleep(Duration::from_millis(ms));
}

impl RemoteMeta {
    /// Metadata in `kv`, fenced by `leases`.
    pub(crate) fn new(kv: Arc<dyn Kv>, leases: Arc<RemoteLeases>) -> Self {
        let nonce = bs58::encode(&crate::step::scope::fresh_nonce()[..6]).into_string();
        RemoteMeta {
            kv,
            leases,
            provenance_cache: Mutex::default(),
            current_provenance: std::sync::OnceLock::new(),
            partial_cache: Mutex::default(),
            partial_seq: Mutex::default(),
            nonce,
        }
    }

    fn corrupt(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::Format(milonga_sdk::Error::corrupt(
            self.kv.describe(key),
            0,
            reason.to_string(),
        ))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| self.corrupt(key, format!("invalid JSON: {e}")))
    }

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| Error::State {
            unique_id: String::new(),
            reason: format!("cannot encode metadata: {e}"),
        })
    }

    fn read_shard(&self, key: &str) -> Result<(Shard, Option<KvVersion>)> {
        match self.kv.get(key)? {
            None => Ok((Shard::default(), None)),
            Some(o) => Ok((self.decode(key, &o.bytes)?, Some(o.version))),
        }
    }

    /// Read-modify-write of the shard of `unique_id`: `change` edits the records and says
    /// whether anything changed; the write is conditional on the version read, and starts over
    /// on a conflict.
    fn update_shard<T>(
        &self,
        unique_id: &str,
        mut change: impl FnMut(&mut BTreeMap<String, Record>) -> Result<(T, bool)>,
    ) -> Result<T> {
        let key = shard_key(unique_id);
        let mut attempt = 0u32;
        loop {
            let (mut shard, version) = self.read_shard(&key)?;
            let (out, changed) = change(&mut shard.records)?;
            if !changed {
                return Ok(out);
            }
            let bytes = Self::encode(&shard)?;
            let written = match &version {
                None => self.kv.create(&key, &bytes)?,
                Some(v) => self.kv.update(&key, &bytes, v)?,
            };
            if written.is_some() {
                return Ok(out);
            }
            attempt += 1;
            backoff(attempt);
        }
    }

    fn to_info(&self, unique_id: &str, r: Record) -> Result<StepInfo> {
        let key = shard_key(unique_id);
        let bad = |what: &str| self.corrupt(&key, format!("step {unique_id}: invalid {what}"));
        let state = StepState::parse(&r.state).ok_or_else(|| bad("state"))?;
        let manifest_id = match &r.manifest_id {
            None => None,
            Some(h) => Some(ContentId::from_hex(h).ok_or_else(|| bad("manifest id"))?),
        };
        let preimage = match &r.args {
            None => None,
            Some(h) => Some(unhex(h).ok_or_else(|| bad("arguments"))?),
        };
        let provenance = match &r.provenance_id {
            None => None,
            Some(id) => self.provenance_arc(id)?,
        };
        Ok(StepInfo {
            unique_id: unique_id.to_owned(),
            step_type: r.step_type,
            version: r.version,
            state,
            manifest_id,
            format_id: r.format_id,
            format_version: r.format_version,
            started_at: r.started_at,
            ended_at: r.ended_at,
            error: r.error,
            metadata: r.metadata,
            attempts: r.attempts,
            owner: r.owner,
            dependencies: r.dependencies,
            preimage,
            nondeterministic: r.nondeterministic,
            provenance,
            reused_from: r.reused_from,
            last_access: r.last_access,
            result_size: r.result_size,
        })
    }

    /// Every record, with its creation time, read shard by shard on a few threads.
    fn all_records(&self) -> Result<Vec<(String, Record)>> {
        let mut all = self.map_shards(|_, shard| Ok(shard.records.into_iter().collect()))?;
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// `convert` applied to every shard, on [`LIST_THREADS`] threads that each fetch a shard,
    /// decode it and convert it (so that decoding overlaps with the other threads' downloads);
    /// the results of all shards, in no particular order.
    fn map_shards<T: Send>(
        &self,
        convert: impl Fn(&str, Shard) -> Result<Vec<T>> + Sync,
    ) -> Result<Vec<T>> {
        let keys: Vec<String> = self
            .kv
            .list(&format!("{META_ROOT}/steps/"))?
            .into_iter()
            .map(|e| e.key)
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<Result<Vec<T>>>> = Mutex::new(Vec::with_capacity(keys.len()));
        std::thread::scope(|s| {
            for _ in 0..LIST_THREADS.min(keys.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(key) = keys.get(i) else { break };
                    let converted = self
                        .read_shard(key)
                        .and_then(|(shard, _)| convert(key, shard));
                    let failed = converted.is_err();
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(converted);
                    if failed {
                        // Stop the other threads early: the listing fails anyway.
                        next.store(keys.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let parts = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut all =
            Vec::with_capacity(parts.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum());
        for part in parts {
            all.extend(part?);
        }
        Ok(all)
    }

    /// Provenance record `id`, read once and then shared.
    fn provenance_arc(&self, id: &str) -> Result<Option<Arc<Provenance>>> {
        if let Some(p) = self
            .provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(Arc::clone(p)));
        }
        let key = provenance_key(id);
        let Some(o) = self.kv.get(&key)? else {
            return Ok(None);
        };
        let p: Arc<Provenance> = Arc::new(self.decode(&key, &o.bytes)?);
        self.provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Arc::clone(&p));
        Ok(Some(p))
    }

    fn read_run(&self, name: &str) -> Result<Option<(RunDoc, KvVersion)>> {
        let key = run_key(name);
        match self.kv.get(&key)? {
            None => Ok(None),
            Some(o) => Ok(Some((self.decode(&key, &o.bytes)?, o.version))),
        }
    }

    fn all_runs(&self) -> Result<Vec<RunDoc>> {
        let mut runs = Vec::new();
        for e in self.kv.list(&format!("{META_ROOT}/runs/"))? {
            if let Some(o) = self.kv.get(&e.key)? {
                runs.push(self.decode::<RunDoc>(&e.key, &o.bytes)?);
            }
        }
        runs.sort_by(|a, b| (a.started_at, &a.name).cmp(&(b.started_at, &b.name)));
        Ok(runs)
    }

    /// The states of `ids` (reading each shard once).
    fn records_of(&self, ids: &[&str]) -> Result<HashMap<String, Record>> {
        let mut by_shard: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for id in ids {
            by_shard.entry(shard_key(id)).or_default().push(id);
        }
        let mut out = HashMap::new();
        for (key, ids) in by_shard {
            let (mut shard, _) = self.read_shard(&key)?;
            for id in ids {
                if let Some(r) = shard.records.remove(id) {
                    out.insert(id.to_owned(), r);
                }
            }
        }
        Ok(out)
    }

    fn put_provenance(&self, p: &Provenance) -> Result<String> {
        let json = serde_json::to_string(p).map_err(|e| Error::State {
            unique_id: String::new(),
            reason: format!("cannot encode provenance: {e}"),
        })?;
        let id = blake3::hash(json.as_bytes()).to_hex()[..32].to_owned();
        self.kv.create(&provenance_key(&id), json.as_bytes())?;
        self.provenance_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Arc::new(p.clone()));
        Ok(id)
    }

    fn delete_partials(&self, unique_id: &str) -> Result<()> {
        for e in self.kv.list(&partial_prefix(unique_id))? {
            self.kv.delete(&e.key)?;
        }
        self.partial_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(unique_id);
        Ok(())
    }
}

fn seq_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.split('-').next()?.parse().ok()
}

impl Metadata for RemoteMeta {
    fn records_access(&self) -> bool {
        true
    }

    fn follow_poll(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn get(&self, unique_id: &str) -> Result<Option<StepInfo>> {
        let (mut shard, _) = self.read_shard(&shard_key(unique_id))?;
        shard
            .records
            .remove(unique_id)
            .map(|r| self.to_info(unique_id, r))
            .transpose()
    }

    fn completed_among(
        &self,
        unique_ids: &mut dyn Iterator<Item = &str>,
    ) -> Result<HashSet<String>> {
        let ids: Vec<&str> = unique_ids.collect();
        Ok(self
            .records_of(&ids)?
            .into_iter()
            .filter(|(_, r)| r.state == StepState::Completed.as_str())
            .map(|(id, _)| id)
            .collect())
    }

    fn all(&self) -> Result<Vec<StepInfo>> {
        let mut all = self.map_shards(|_, shard| {
            shard
                .records
                .into_iter()
                .map(|(id, r)| self.to_info(&id, r))
                .collect()
        })?;
        all.sort_unstable_by(|a, b| a.unique_id.cmp(&b.unique_id));
        Ok(all)
    }

    fn earlier_of_type(
        &self,
        step_type: &str,
        unique_id: &str,
        limit: usize,
    ) -> Result<Vec<StepInfo>> {
        let all = self.all_records()?;
        let mine = all
            .iter()
            .find(|(id, _)| id == unique_id)
            .map_or(i64::MAX, |(_, r)| r.created_at);
        let mut of_type: Vec<(String, Record)> = all
            .into_iter()
            .filter(|(id, r)| r.step_type == step_type && id != unique_id && r.created_at < mine)
            .collect();
        of_type.sort_by(|a, b| (b.1.created_at, &b.0).cmp(&(a.1.created_at, &a.0)));
        of_type
            .into_iter()
            .take(limit)
            .map(|(id, r)| self.to_info(&id, r))
            .collect()
    }

    fn provenance(&self, id: &str) -> Result<Option<Provenance>> {
        Ok(self.provenance_arc(id)?.map(|p| (*p).clone()))
    }

    fn put_current_provenance(&self) -> Result<String> {
        if let Some(id) = self.current_provenance.get() {
            return Ok(id.clone());
        }
        let id = self.put_provenance(Provenance::current())?;
        Ok(self.current_provenance.get_or_init(|| id).clone())
    }

    fn mark_running(&self, info: &StepInfo, extra: &NewRecord<'_>) -> Result<()> {
        let token = self.leases.fence(&info.unique_id, extra.reused.is_some())?;
        let now = now_millis();
        // A result reused by early cutoff has the size of the step it comes from.
        let reused_size = match extra.reused {
            Some((from, _)) => self.get(from)?.and_then(|i| i.result_size),
            None => None,
        };
        self.update_shard(&info.unique_id, |records| {
            let previous = records.get(&info.unique_id);
            let record = Record {
                step_type: info.step_type.clone(),
                version: info.version.clone(),
                state: if extra.reused.is_some() {
                    StepState::Completed.as_str().into()
                } else {
                    StepState::Running.as_str().into()
                },
                manifest_id: extra.reused.map(|(_, m)| m.to_hex()),
                format_id: info.format_id.clone(),
                format_version: info.format_version,
                started_at: info.started_at,
                ended_at: extra.reused.map(|_| now),
                error: None,
                metadata: info.metadata.clone(),
                attempts: previous.map_or(1, |p| p.attempts.saturating_add(1)),
                owner: info.owner.clone(),
                dependencies: {
                    let mut d = info.dependencies.clone();
                    d.sort();
                    d.dedup();
                    d
                },
                args: info.preimage.as_deref().map(hex),
                nondeterministic: info.nondeterministic,
                provenance_id: extra.provenance_id.map(Into::into),
                content_key: extra.content_key.map(Into::into),
                reused_from: extra.reused.map(|(id, _)| id.to_owned()),
                last_access: info.started_at,
                created_at: previous.map_or(now, |p| p.created_at),
                token: Some(token),
                result_size: reused_size,
            };
            records.insert(info.unique_id.clone(), record);
            Ok(((), true))
        })?;
        if let (Some(key), Some((_, manifest))) = (extra.content_key, extra.reused) {
            self.index_content_key(key, &info.unique_id, manifest)?;
        }
        Ok(())
    }

    fn completed_with_content_key(
        &self,
        key: &str,
        except: &str,
    ) -> Result<Option<(String, ContentId)>> {
        let k = content_key_key(key);
        let Some(o) = self.kv.get(&k)? else {
            return Ok(None);
        };
        let doc: ContentDoc = self.decode(&k, &o.bytes)?;
        if doc.unique_id == except {
            return Ok(None);
        }
        // The index may be stale (the step removed or recomputed since): believe the record.
        match self.get(&doc.unique_id)? {
            Some(i) if i.state == StepState::Completed => {
                Ok(i.manifest_id.map(|m| (doc.unique_id, m)))
            }
            _ => Ok(None),
        }
    }

    fn touch(&self, unique_id: &str, now: i64) -> Result<()> {
        self.update_shard(unique_id, |records| match records.get_mut(unique_id) {
            Some(r) => {
                r.last_access = Some(now);
                Ok(((), true))
            }
            None => Ok(((), false)),
        })
    }

    fn mark_failed(&self, unique_id: &str, error: &str) -> Result<()> {
        self.leases.fence(unique_id, true)?;
        self.update_shard(unique_id, |records| match records.get_mut(unique_id) {
            Some(r) => {
                r.state = StepState::Failed.as_str().into();
                r.ended_at = Some(now_millis());
                r.error = Some(error.to_owned());
                Ok(((), true))
            }
            None => Ok(((), false)),
        })
    }

    fn mark_completed(
        &self,
        unique_id: &str,
        manifest: &ContentId,
        result_size: u64,
    ) -> Result<()> {
        // Renews the lease by a conditional write first: a holder whose lease was taken over
        // is refused here, before it writes anything.
        let token = self.leases.fence(unique_id, true)?;
        let hex_id = manifest.to_hex();
        let content_key = self.update_shard(unique_id, |records| {
            let Some(r) = records.get_mut(unique_id) else {
                return Err(Error::State {
                    unique_id: unique_id.into(),
                    reason: "cannot record completion: the step has no record (removed while \
                             it ran)"
                        .into(),
                });
            };
            if r.state == StepState::Completed.as_str() {
                // Never COMPLETED twice with different content: the same manifest is success.
                return match &r.manifest_id {
                    Some(m) if *m == hex_id => Ok((r.content_key.clone(), false)),
                    other => Err(Error::State {
                        unique_id: unique_id.into(),
                        reason: format!(
                            "already recorded COMPLETED with manifest {}; refusing to record \
                             manifest {hex_id}",
                            other.as_deref().unwrap_or("(none)")
                        ),
                    }),
                };
            }
            if r.token.is_some_and(|t| t > token) {
                return Err(Error::LeaseLost {
                    unique_id: unique_id.into(),
                    token,
                    reason: format!(
                        "the record was written under the newer fencing token {}",
                        r.token.unwrap_or_default()
                    ),
                });
            }
            let now = now_millis();
            r.state = StepState::Completed.as_str().into();
            r.manifest_id = Some(hex_id.clone());
            r.ended_at = Some(now);
            r.last_access = Some(now);
            r.error = None;
            r.token = Some(token);
            r.result_size = Some(result_size);
            Ok((r.content_key.clone(), true))
        })?;
        self.delete_partials(unique_id)?;
        if let Some(key) = content_key {
            self.index_content_key(&key, unique_id, manifest)?;
        }
        Ok(())
    }

    fn remove(&self, unique_id: &str) -> Result<bool> {
        let removed = self.update_shard(unique_id, |records| {
            let gone = records.remove(unique_id).is_some();
            Ok((gone, gone))
        })?;
        self.delete_partials(unique_id)?;
        Ok(removed)
    }

    fn add_partial(&self, unique_id: &str, entry: &FileEntry) -> Result<()> {
        self.leases.fence(unique_id, false)?;
        let seq = {
            let mut seqs = self.partial_seq.lock().unwrap_or_else(|p| p.into_inner());
            let next = match seqs.get(unique_id) {
                Some(n) => *n,
                None => self
                    .kv
                    .list(&partial_prefix(unique_id))?
                    .iter()
                    .filter_map(|e| seq_of(&e.key))
                    .max()
                    .map_or(0, |m| m + 1),
            };
            seqs.insert(unique_id.to_owned(), next + 1);
            next
        };
        let key = format!("{}{seq:010}-{}.json", partial_prefix(unique_id), self.nonce);
        let doc = PartialDoc {
            name: entry.name.clone(),
            id: entry.id.to_hex(),
            len: entry.len,
        };
        if self.kv.create(&key, &Self::encode(&doc)?)?.is_none() {
            return Err(Error::State {
                unique_id: unique_id.into(),
                reason: format!(
                    "partial file record {} exists already",
                    self.kv.describe(&key)
                ),
            });
        }
        self.partial_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, entry.clone());
        Ok(())
    }

    fn partial_files(&self, unique_id: &str) -> Result<Vec<FileEntry>> {
        let mut out = Vec::new();
        for e in self.kv.list(&partial_prefix(unique_id))? {
            let cached = self
                .partial_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&e.key)
                .cloned();
            let entry = match cached {
                Some(c) => c,
                None => {
                    // Removed between the listing and now (completed, or cleared): skip.
                    let Some(o) = self.kv.get(&e.key)? else {
                        continue;
                    };
                    let doc: PartialDoc = self.decode(&e.key, &o.bytes)?;
                    let id = ContentId::from_hex(&doc.id)
                        .ok_or_else(|| self.corrupt(&e.key, "invalid object id"))?;
                    let entry = FileEntry {
                        name: doc.name,
                        len: doc.len,
                        id,
                    };
                    self.partial_cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(e.key.clone(), entry.clone());
                    entry
                }
            };
            out.push(entry);
        }
        Ok(out)
    }

    fn clear_partial(&self, unique_id: &str) -> Result<()> {
        self.leases.fence(unique_id, false)?;
        self.delete_partials(unique_id)
    }

    fn insert_run(
        &self,
        name: Option<&str>,
        steps: &[NewRunStep],
        provenance_id: Option<&str>,
    ) -> Result<String> {
        crate::workspace::register_run(name, |candidate| {
            let mut seen = HashSet::new();
            let doc = RunDoc {
                name: candidate.to_owned(),
                started_at: now_millis(),
                ended_at: None,
                provenance_id: provenance_id.map(Into::into),
                steps: steps
                    .iter()
                    .filter(|(id, _, _)| seen.insert(id.clone()))
                    .map(|(id, n, t)| RunDocStep {
                        unique_id: id.clone(),
                        name: n.clone(),
                        target: *t,
                    })
                    .collect(),
            };
            Ok(self
                .kv
                .create(&run_key(candidate), &Self::encode(&doc)?)?
                .is_some())
        })
    }

    fn end_run(&self, name: &str) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            let Some((mut doc, version)) = self.read_run(name)? else {
                return Ok(());
            };
            doc.ended_at = Some(now_millis());
            if self
                .kv
                .update(&run_key(name), &Self::encode(&doc)?, &version)?
                .is_some()
            {
                return Ok(());
            }
            attempt += 1;
            backoff(attempt);
        }
    }

    fn list_runs(&self) -> Result<Vec<RunSummary>> {
        let runs = self.all_runs()?;
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = runs
            .iter()
            .flat_map(|r| r.steps.iter().map(|s| s.unique_id.as_str()))
            .collect();
        let records = self.records_of(&ids)?;
        Ok(runs
            .iter()
            .map(|r| RunSummary {
                name: r.name.clone(),
                started_at: r.started_at,
                ended_at: r.ended_at,
                steps: r.steps.len() as u64,
                targets: r.steps.iter().filter(|s| s.target).count() as u64,
                completed: r
                    .steps
                    .iter()
                    .filter(|s| {
                        records
                            .get(&s.unique_id)
                            .is_some_and(|x| x.state == StepState::Completed.as_str())
                    })
                    .count() as u64,
            })
            .collect())
    }

    fn get_run(&self, name: &str) -> Result<Option<StoredRun>> {
        let Some((doc, _)) = self.read_run(name)? else {
            return Ok(None);
        };
        let ids: Vec<&str> = doc.steps.iter().map(|s| s.unique_id.as_str()).collect();
        let records = self.records_of(&ids)?;
        let mut steps: Vec<RunStep> = doc
            .steps
            .iter()
            .map(|s| {
                let r = records.get(&s.unique_id);
                RunStep {
                    name: s.name.clone(),
                    unique_id: s.unique_id.clone(),
                    target: s.target,
                    step_type: r.map(|r| r.step_type.clone()),
                    state: r.and_then(|r| StepState::parse(&r.state)),
                }
            })
            .collect();
        steps.sort_by_key(|s| !s.target);
        Ok(Some((
            doc.started_at,
            doc.ended_at,
            doc.provenance_id,
            steps,
        )))
    }

    fn delete_run(&self, name: &str) -> Result<Option<Vec<String>>> {
        let Some((doc, _)) = self.read_run(name)? else {
            return Ok(None);
        };
        self.kv.delete(&run_key(name))?;
        let others: HashSet<String> = self
            .all_runs()?
            .into_iter()
            .filter(|r| r.name != name)
            .flat_map(|r| r.steps.into_iter().map(|s| s.unique_id))
            .collect();
        Ok(Some(
            doc.steps
                .into_iter()
                .map(|s| s.unique_id)
                .filter(|id| !others.contains(id))
                .collect(),
        ))
    }

    fn rooted_ids(&self) -> Result<Option<HashSet<String>>> {
        Ok(Some(
            self.all_runs()?
                .into_iter()
                .flat_map(|r| r.steps.into_iter().map(|s| s.unique_id))
                .collect(),
        ))
    }

    fn remove_if_unrooted(&self, unique_id: &str) -> Result<bool> {
        let rooted = self
            .all_runs()?
            .iter()
            .any(|r| r.steps.iter().any(|s| s.unique_id == unique_id));
        if rooted {
            return Ok(false);
        }
        self.remove(unique_id)
    }
}

impl RemoteMeta {
    fn index_content_key(&self, key: &str, unique_id: &str, manifest: &ContentId) -> Result<()> {
        let doc = ContentDoc {
            unique_id: unique_id.to_owned(),
            manifest_id: manifest.to_hex(),
        };
        self.kv.put(&content_key_key(key), &Self::encode(&doc)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record(provenance_id: &str, n: i64) -> Record {
        Record {
            step_type: "Row".into(),
            version: None,
            state: StepState::Completed.as_str().into(),
            manifest_id: Some(ContentId([7; 32]).to_hex()),
            format_id: "milonga.postcard".into(),
            format_version: 1,
            started_at: Some(n),
            ended_at: Some(n),
            error: None,
            metadata: serde_json::Value::Null,
            attempts: 1,
            owner: None,
            dependencies: Vec::new(),
            args: Some("00ff".into()),
            nondeterministic: false,
            provenance_id: Some(provenance_id.into()),
            content_key: None,
            reused_from: None,
            last_access: Some(n),
            created_at: n,
            token: Some(1),
            result_size: Some(8),
        }
    }

    #[test]
    fn a_listing_reads_every_shard_shares_provenance_and_names_a_damaged_shard() {
        let kv = Arc::new(MemoryKv::default());
        let meta = RemoteMeta::new(
            kv.clone(),
            RemoteLeases::new(kv.clone(), Duration::from_secs(30)),
        );
        let prov = meta.put_current_provenance().unwrap();
        let ids: Vec<String> = (0..700).map(|i| format!("Row-{i:05}")).collect();
        for (n, id) in ids.iter().enumerate() {
            meta.update_shard(id, |records| {
                records.insert(id.clone(), record(&prov, n as i64));
                Ok(((), true))
            })
            .unwrap();
        }
        let shards = kv.list(&format!("{META_ROOT}/steps/")).unwrap().len();
        assert!(shards > 200, "the records are spread over {shards} shards");

        // A fresh handle (nothing cached): every record, in unique-id order, converted.
        let fresh = RemoteMeta::new(
            kv.clone(),
            RemoteLeases::new(kv.clone(), Duration::from_secs(30)),
        );
        let all = fresh.all().unwrap();
        let listed: Vec<&str> = all.iter().map(|i| i.unique_id.as_str()).collect();
        assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(all
            .iter()
            .all(|i| i.preimage.as_deref() == Some(&[0, 255][..])));
        // One provenance record, read once, shared by every record that names it.
        let first = all[0].provenance.clone().expect("a provenance");
        assert!(all.iter().all(|i| i
            .provenance
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &first))));

        // A shard that is not JSON fails the listing, naming the shard's URL.
        let bad = shard_key(&ids[123]);
        kv.put(&bad, b"{not json").unwrap();
        let err = fresh.all().unwrap_err().to_string();
        assert!(err.contains(&format!("memory-kv://{bad}")), "{err}");
        assert!(err.contains("invalid JSON"), "{err}");
    }
}

/// An in-memory [`Kv`] with the same conditional-write semantics, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryKv {
    objects: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    counter: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl Kv for MemoryKv {
    fn describe(&self, key: &str) -> String {
        format!("memory-kv://{key}")
    }

    fn get(&self, key: &str) -> Result<Option<KvObject>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|(b, v)| KvObject {
                bytes: b.clone(),
                version: KvVersion(v.to_string()),
            }))
    }

    fn create(&self, key: &str, bytes: &[u8]) -> Result<Option<KvVersion>> {
        let mut o = self.objects.lock().unwrap();
        if o.contains_key(key) {
            return Ok(None);
        }
        let v = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        o.insert(key.into(), (bytes.to_vec(), v));
        Ok(Some(KvVersion(v.to_string())))
    }

    fn update(&self, key: &str, bytes: &[u8], version: &KvVersion) -> Result<Option<KvVersion>> {
        let mut o = self.objects.lock().unwrap();
        match o.get(key) {
            Some((_, v)) if v.to_string() == version.0 => {
                let v = self
                    .counter
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                o.insert(key.into(), (bytes.to_vec(), v));
                Ok(Some(KvVersion(v.to_string())))
            }
            _ => Ok(None),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let v = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), (bytes.to_vec(), v));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| KvEntry { key: k.clone() })
            .collect())
    }
}

/// The [`Kv`] of a remote workspace: its [`Remote`](super::Remote) client (conditional
/// writes: If-None-Match: `*` to create, If-Match on the ETag to update; retries of transient
/// failures; errors naming the URL).
pub(crate) struct RemoteKv(pub(crate) super::Remote);

impl Kv for RemoteKv {
    fn describe(&self, key: &str) -> String {
        self.0.url_of(key)
    }

    fn get(&self, key: &str) -> Result<Option<KvObject>> {
        Ok(self.0.get(key)?.map(|(bytes, info)| KvObject {
            bytes: bytes.to_vec(),
            version: KvVersion(info.version.e_tag.unwrap_or_default()),
        }))
    }

    fn create(&self, key: &str, bytes: &[u8]) -> Result<Option<KvVersion>> {
        Ok(match self.0.put_if_absent(key, bytes.to_vec())? {
            super::Created::Created(v) => Some(KvVersion(v.e_tag.unwrap_or_default())),
            super::Created::AlreadyExists => None,
        })
    }

    fn update(&self, key: &str, bytes: &[u8], version: &KvVersion) -> Result<Option<KvVersion>> {
        let expected = super::Version {
            e_tag: Some(version.0.clone()),
            version: None,
        };
        Ok(match self.0.put_if_match(key, bytes.to_vec(), &expected)? {
            super::Updated::Updated(v) => Some(KvVersion(v.e_tag.unwrap_or_default())),
            super::Updated::Conflict => None,
        })
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.0.put(key, bytes.to_vec())?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        Ok(self.0.delete(key)?)
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let mut out = Vec::new();
        for info in self.0.list(prefix) {
            let info = info?;
            if info.key.starts_with(prefix) {
                out.push(KvEntry { key: info.key });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
