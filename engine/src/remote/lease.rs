//! Leases: single flight across machines on a remote workspace (the remote side of the
//! [`Leases`](crate::workspace::Leases) seam).
//!
//! A running step holds `meta/v1/leases/UID.json` = `{owner, holder, token, expires_at,
//! released}`. It is taken by a create-if-absent (token 1), or by a conditional update
//! (If-Match on the version read) of a lease that is released or expired, with the token
//! incremented: tokens only grow. A heartbeat thread renews it (a conditional update) every
//! third of the lease duration; a renewal that finds the lease changed means it was taken
//! over, and the holder is fenced: its next partial file or completion is refused with
//! [`Error::LeaseLost`]. The completion always renews first (the fencing write), so a holder
//! that slept past its expiry cannot record a result once another holder has the step.
//! Expiry compares wall clocks: clocks of the machines must agree to well within the lease
//! duration (docs/FORMAT.md, "Remote metadata").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::meta::{Kv, KvVersion, META_ROOT};
use crate::error::{Error, Result};
use crate::workspace::{check_step_id, now_millis, GcLock, Leases, StepLock};

/// The default lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);

/// The environment variable that sets the lease duration of remote workspaces, in seconds
/// (fractions allowed): short in tests, longer on slow networks.
pub const LEASE_SECONDS_ENV: &str = "MILONGA_LEASE_SECONDS";

/// The lease duration: [`LEASE_SECONDS_ENV`] if set to a positive number, else the default.
pub(crate) fn lease_duration_from_env() -> Duration {
    std::env::var(LEASE_SECONDS_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_LEASE_DURATION, Duration::from_secs_f64)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDoc {
    /// Who holds it (`pid@host`), for messages.
    owner: String,
    /// The holding handle's nonce.
    holder: String,
    /// The fencing token: incremented by every takeover.
    token: u64,
    /// Until when it holds, in milliseconds since the Unix epoch.
    expires_at: i64,
    /// Released by its holder (free to take, token kept).
    released: bool,
}

fn lease_key(unique_id: &str) -> String {
    format!("{META_ROOT}/leases/{unique_id}.json")
}

/// A lease this process holds.
struct Held {
    token: u64,
    holder: String,
    state: Mutex<HeldState>,
}

struct HeldState {
    version: KvVersion,
    expires_at: i64,
    /// Why the lease was lost, once it was.
    lost: Option<String>,
}

/// The leases of one remote workspace handle.
pub(crate) struct RemoteLeases {
    kv: Arc<dyn Kv>,
    duration: Duration,
    owner: String,
    held: Mutex<HashMap<String, Arc<Held>>>,
}

impl RemoteLeases {
    /// Leases in `kv` lasting `duration` without a renewal.
    pub(crate) fn new(kv: Arc<dyn Kv>, duration: Duration) -> Arc<Self> {
        // The pid and host alone: not the whole provenance record, whose git commands would
        // make every opening of a remote workspace (a read of a cached result too) spawn two
        // processes.
        Arc::new(RemoteLeases {
            kv,
            duration,
            owner: format!("{}@{}", std::process::id(), crate::workspace::host_name()),
            held: Mutex::default(),
        })
    }

    fn duration_ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }

    fn read(&self, key: &str) -> Result<Option<(LeaseDoc, KvVersion)>> {
        match self.kv.get(key)? {
            None => Ok(None),
            Some(o) => {
                let doc = serde_json::from_slice(&o.bytes).map_err(|e| {
                    Error::Format(milonga_sdk::Error::corrupt(
                        self.kv.describe(key),
                        0,
                        format!("invalid lease: {e}"),
                    ))
                })?;
                Ok(Some((doc, o.version)))
            }
        }
    }

    fn encode(doc: &LeaseDoc) -> Vec<u8> {
        serde_json::to_vec(doc).unwrap_or_default()
    }

    /// One attempt to take the lease of `unique_id`.
    fn try_take(self: &Arc<Self>, unique_id: &str) -> Result<Option<StepLock>> {
        check_step_id(unique_id)?;
        if self.holds(unique_id) {
            // Another thread of this process runs it: single flight within the process too.
            return Ok(None);
        }
        let key = lease_key(unique_id);
        let holder = bs58::encode(&crate::step::scope::fresh_nonce()[..9]).into_string();
        let now = now_millis();
        let mut doc = LeaseDoc {
            owner: self.owner.clone(),
            holder: holder.clone(),
            token: 1,
            expires_at: now.saturating_add(self.duration_ms()),
            released: false,
        };
        let version = match self.kv.create(&key, &Self::encode(&doc))? {
            Some(v) => v,
            None => {
                let Some((current, version)) = self.read(&key)? else {
                    // Deleted in between: try again later.
                    return Ok(None);
                };
                if !current.released && current.expires_at > now {
                    return Ok(None);
                }
                doc.token = current.token.saturating_add(1);
                match self.kv.update(&key, &Self::encode(&doc), &version)? {
                    Some(v) => {
                        if !current.released {
                            tracing::info!(target: "milonga::lease", step = %unique_id,
                                previous = %current.owner, token = doc.token,
                                "took over an expired lease");
                        }
                        v
                    }
                    None => return Ok(None),
                }
            }
        };
        let held = Arc::new(Held {
            token: doc.token,
            holder,
            state: Mutex::new(HeldState {
                version,
                expires_at: doc.expires_at,
                lost: None,
            }),
        });
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unique_id.to_owned(), Arc::clone(&held));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let me = Arc::clone(self);
        let id = unique_id.to_owned();
        let beat = Arc::clone(&held);
        let every = self.duration / 3;
        let thread = std::thread::Builder::new()
            .name(format!("milonga-lease-{unique_id}"))
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if me.renew(&id, &beat).is_err() && beat_lost(&beat) {
                            return;
                        }
                    }
                    _ => return,
                }
            })
            .map_err(|e| Error::io("lease heartbeat thread", e))?;
        Ok(Some(StepLock::new(LeaseGuard {
            leases: Arc::clone(self),
            unique_id: unique_id.to_owned(),
            held,
            stop: Some(stop),
            thread: Some(thread),
        })))
    }

    fn holds(&self, unique_id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(unique_id)
    }

    /// Renews a held lease by a conditional write on the version last written. An error if
    /// it was lost (now or before).
    fn renew(&self, unique_id: &str, held: &Held) -> Result<()> {
        let mut st = held.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.lost {
            return Err(self.lost(unique_id, held.token, why.clone()));
        }
        let key = lease_key(unique_id);
        let doc = LeaseDoc {
            owner: self.owner.clone(),
            holder: held.holder.clone(),
            token: held.token,
            expires_at: now_millis().saturating_add(self.duration_ms()),
            released: false,
        };
        match self.kv.update(&key, &Self::encode(&doc), &st.version)? {
            Some(v) => {
                st.version = v;
                st.expires_at = doc.expires_at;
                Ok(())
            }
            None => {
                let why = match self.read(&key) {
                    Ok(Some((now, _))) => format!(
                        "it expired and {} took the step over with fencing token {}",
                        now.owner, now.token
                    ),
                    Ok(None) => "its lease object was removed".into(),
                    Err(e) => format!("its lease changed ({e})"),
                };
                tracing::warn!(target: "milonga::lease", step = %unique_id, token = held.token, reason = %why, "lease lost");
                st.lost = Some(why.clone());
                Err(self.lost(unique_id, held.token, why))
            }
        }
    }

    fn lost(&self, unique_id: &str, token: u64, why: String) -> Error {
        Error::LeaseLost {
            unique_id: unique_id.into(),
            token,
            reason: format!(
                "this process ({}) held fencing token {token}, but {why}",
                self.owner
            ),
        }
    }

    /// Checks that this process still holds the lease of `unique_id` before a write made
    /// under it, and returns its fencing token. `strict` (a completion, a failure, an early
    /// cutoff) renews the lease by a conditional write first; otherwise the lease is renewed
    /// only when less than a quarter of its duration is left.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if the lease is not held (never taken, or taken over).
    pub(crate) fn fence(&self, unique_id: &str, strict: bool) -> Result<u64> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(unique_id)
            .cloned();
        let Some(held) = held else {
            return Err(Error::LeaseLost {
                unique_id: unique_id.into(),
                token: 0,
                reason: format!(
                    "this process ({}) does not hold the step's lease",
                    self.owner
                ),
            });
        };
        let renew = strict || {
            let st = held.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &st.lost {
                return Err(self.lost(unique_id, held.token, why.clone()));
            }
            st.expires_at.saturating_sub(now_millis()) < self.duration_ms() / 4
        };
        if renew {
            self.renew(unique_id, &held)?;
        }
        Ok(held.token)
    }

    fn release(&self, unique_id: &str, held: &Held) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(unique_id);
        let st = held.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.lost.is_some() {
            return;
        }
        let doc = LeaseDoc {
            owner: self.owner.clone(),
            holder: held.holder.clone(),
            token: held.token,
            expires_at: 0,
            released: true,
        };
        // Best effort: a lease not released expires.
        if let Err(e) = self
            .kv
            .update(&lease_key(unique_id), &Self::encode(&doc), &st.version)
        {
            tracing::debug!(target: "milonga::lease", step = %unique_id, error = %e, "lease not released; it will expire");
        }
    }
}

fn beat_lost(held: &Held) -> bool {
    held.state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .lost
        .is_some()
}

/// A held lease: renewed by its heartbeat thread until dropped, then released.
struct LeaseGuard {
    leases: Arc<RemoteLeases>,
    unique_id: String,
    held: Arc<Held>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.leases.release(&self.unique_id, &self.held);
    }
}

/// The [`Leases`] of a remote workspace.
pub(crate) struct RemoteLeasesHandle(pub(crate) Arc<RemoteLeases>);

impl Leases for RemoteLeasesHandle {
    fn lock_step(&self, unique_id: &str) -> Result<StepLock> {
        let poll =
            (self.0.duration / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            if let Some(lock) = self.0.try_take(unique_id)? {
                return Ok(lock);
            }
            std::thread::sleep(poll);
        }
    }

    fn try_lock_step(&self, unique_id: &str) -> Result<Option<StepLock>> {
        self.0.try_take(unique_id)
    }

    fn is_locked(&self, unique_id: &str) -> bool {
        if let Some(h) = self
            .0
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(unique_id)
        {
            return !beat_lost(h);
        }
        match self.0.read(&lease_key(unique_id)) {
            Ok(Some((doc, _))) => !doc.released && doc.expires_at > now_millis(),
            Ok(None) => false,
            // Unknown: say held, so that nobody reports a live writer dead.
            Err(_) => true,
        }
    }

    /// No gc lock on a remote workspace: a collection keeps objects younger than its grace
    /// period, which covers the time from publishing an object until the metadata refers
    /// to it.
    fn gc_shared(&self) -> Result<GcLock> {
        Ok(GcLock::none())
    }

    fn gc_exclusive(&self) -> Result<GcLock> {
        Ok(GcLock::none())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use serde::Serialize;

    use super::*;
    use crate::remote::meta::{MemoryKv, RemoteMeta};
    use crate::store::MemoryStore;
    use crate::workspace::Workspace;
    use crate::{Context, PostcardFormat, Step, StepState};

    #[derive(Serialize)]
    struct Square {
        x: u64,
    }

    impl Step for Square {
        const NAME: &'static str = "Square";
        type Output = u64;
        type Format = PostcardFormat;
        fn run(&self, _: &mut Context<'_>) -> Result<u64, crate::BoxError> {
            Ok(self.x * self.x)
        }
    }

    fn remote(
        kv: &Arc<MemoryKv>,
        duration: Duration,
    ) -> (Workspace, Arc<RemoteLeases>, tempfile::TempDir) {
        let kv: Arc<dyn Kv> = kv.clone();
        let leases = RemoteLeases::new(Arc::clone(&kv), duration);
        let meta = RemoteMeta::new(kv, Arc::clone(&leases));
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::with_backend(
            "test://remote".into(),
            Arc::new(MemoryStore::new()),
            Box::new(meta),
            Box::new(RemoteLeasesHandle(Arc::clone(&leases))),
            dir.path().join("local"),
            None,
        )
        .unwrap();
        (ws, leases, dir)
    }

    #[test]
    fn remote_metadata_records_completed_steps_and_lists_them() {
        let kv = Arc::new(MemoryKv::default());
        let (ws, _, _dir) = remote(&kv, Duration::from_secs(30));
        for x in 0..20 {
            assert_eq!(*Square { x }.result(&ws).unwrap(), x * x);
        }
        let steps = ws.steps().unwrap();
        assert_eq!(steps.len(), 20);
        assert!(steps.iter().all(|s| s.state == StepState::Completed));
        let mut ids: Vec<_> = steps.iter().map(|s| s.unique_id.clone()).collect();
        let sorted = {
            let mut v = ids.clone();
            v.sort();
            v
        };
        assert_eq!(ids, sorted, "listed in unique-id order");
        ids.dedup();
        assert_eq!(ids.len(), 20);
        // Another handle on the same metadata sees them (nothing is kept only in memory).
        let (other, _, _dir2) = remote(&kv, Duration::from_secs(30));
        let id = Square { x: 7 }.unique_id().unwrap();
        let info = other.step_info(&id).unwrap().unwrap();
        assert_eq!(info.state, StepState::Completed);
        assert!(info.provenance.is_some());
        // Leases were released: nobody holds a step.
        assert!(!other.inner.is_locked(&id));
    }

    #[test]
    fn completing_a_step_again_with_other_content_is_refused() {
        let kv = Arc::new(MemoryKv::default());
        let (ws, _, _dir) = remote(&kv, Duration::from_secs(30));
        let id = Square { x: 3 }.unique_id().unwrap();
        Square { x: 3 }.result(&ws).unwrap();
        let recorded = ws.step_info(&id).unwrap().unwrap().manifest_id.unwrap();
        let _lock = ws.inner.try_lock_step(&id).unwrap().unwrap();
        // The same manifest again is success; another one is refused.
        ws.inner.db.mark_completed(&id, &recorded, 0).unwrap();
        let other = milonga_sdk::ContentId([7; 32]);
        let err = ws.inner.db.mark_completed(&id, &other, 0).unwrap_err();
        assert!(
            err.to_string().contains("already recorded COMPLETED"),
            "{err}"
        );
        assert_eq!(
            ws.step_info(&id).unwrap().unwrap().manifest_id,
            Some(recorded)
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_the_stale_holders_commit_is_refused() {
        let kv = Arc::new(MemoryKv::default());
        let (a, a_leases, _dir_a) = remote(&kv, Duration::from_secs(600));
        let (b, _, _dir_b) = remote(&kv, Duration::from_secs(600));
        let id = Square { x: 5 }.unique_id().unwrap();
        let a_lock = a.inner.try_lock_step(&id).unwrap().expect("free");
        assert!(b.inner.is_locked(&id), "a live lease is seen by others");
        assert!(b.inner.try_lock_step(&id).unwrap().is_none());
        // A stops renewing (a paused process): make its lease look expired.
        let key = lease_key(&id);
        let mut doc: LeaseDoc =
            serde_json::from_slice(&kv.get(&key).unwrap().unwrap().bytes).unwrap();
        assert_eq!(doc.token, 1);
        doc.expires_at = now_millis() - 1;
        kv.put(&key, &serde_json::to_vec(&doc).unwrap()).unwrap();
        assert!(!b.inner.is_locked(&id));
        // B takes over with a newer token and completes the step.
        let b_lock = b
            .inner
            .try_lock_step(&id)
            .unwrap()
            .expect("expired: taken over");
        let doc: LeaseDoc = serde_json::from_slice(&kv.get(&key).unwrap().unwrap().bytes).unwrap();
        assert_eq!(doc.token, 2);
        drop(b_lock);
        assert_eq!(*Square { x: 5 }.result(&b).unwrap(), 25);
        // A's late completion (and any late partial file) is refused by its fencing token.
        let err = a
            .inner
            .db
            .mark_completed(&id, &milonga_sdk::ContentId([9; 32]), 0)
            .unwrap_err();
        match &err {
            crate::Error::LeaseLost { token, reason, .. } => {
                assert_eq!(*token, 1);
                // B took it with token 2, released it, and took it again (3) to compute.
                assert!(reason.contains("with fencing token 3"), "{reason}");
            }
            other => panic!("expected LeaseLost, got {other}"),
        }
        let entry = milonga_sdk::FileEntry {
            name: "late".into(),
            len: 1,
            id: milonga_sdk::ContentId([1; 32]),
        };
        assert!(matches!(
            a.inner.db.add_partial(&id, &entry),
            Err(crate::Error::LeaseLost { .. })
        ));
        assert!(a.inner.db.partial_files(&id).unwrap().is_empty());
        assert_eq!(
            b.step_info(&id).unwrap().unwrap().state,
            StepState::Completed
        );
        drop(a_lock);
        drop(a_leases);
    }

    #[test]
    fn a_write_without_the_lease_is_refused() {
        let kv = Arc::new(MemoryKv::default());
        let (ws, _, _dir) = remote(&kv, Duration::from_secs(30));
        let err = ws
            .inner
            .db
            .mark_completed("Square-abc", &milonga_sdk::ContentId([0; 32]), 0)
            .unwrap_err();
        assert!(
            matches!(err, crate::Error::LeaseLost { token: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_heartbeat_keeps_a_short_lease_alive() {
        let kv = Arc::new(MemoryKv::default());
        let (a, _, _dir_a) = remote(&kv, Duration::from_millis(300));
        let (b, _, _dir_b) = remote(&kv, Duration::from_millis(300));
        let lock = a.inner.try_lock_step("Square-x").unwrap().unwrap();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(b.inner.try_lock_step("Square-x").unwrap().is_none());
        }
        drop(lock);
        assert!(b.inner.try_lock_step("Square-x").unwrap().is_some());
    }
}
