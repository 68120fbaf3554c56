//! The sync state of a [`MemoryStore`]: maps behind one mutex (lease expiry on the monotonic
//! clock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::error::Error;
use crate::store::sync_backend::{Key, SyncBackend};
use crate::sync::{Commit, InboxEntry, StreamState, SyncLease, SyncStream, VersionEntry};
use crate::token::UserId;

#[derive(Debug, Default)]
pub(crate) struct SyncMaps(Mutex<Maps>);

#[derive(Debug, Default)]
struct Maps {
    streams: HashMap<Key, (StreamState, Option<(String, Instant)>)>,
    versions: HashMap<Key, BTreeMap<String, VersionEntry>>,
    inbox: HashMap<Key, InboxEntry>,
    next_seq: u64,
    stopped: HashMap<UserId, String>,
}

impl SyncMaps {
    fn with<T>(&self, f: impl FnOnce(&mut Maps) -> T) -> T {
        // Every change below is complete before the guard drops: a poisoned map is consistent.
        let mut maps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut maps)
    }
}

impl SyncBackend for MemoryStore {
    async fn lease(&self, key: Key, ttl: Duration) -> Result<Option<SyncLease>, Error> {
        let now = Instant::now();
        Ok(self.sync.with(|m| {
            let (state, holder) = m.streams.entry(key).or_default();
            if holder.as_ref().is_some_and(|(_, until)| *until > now) {
                return None;
            }
            state.fence += 1;
            let owner = SyncLease::new_owner();
            *holder = Some((owner.clone(), now + ttl));
            Some(SyncLease {
                user: key.user,
                stream: key.stream,
                owner,
                fence: state.fence,
            })
        }))
    }

    async fn release(&self, lease: &SyncLease) -> Result<(), Error> {
        self.sync.with(|m| {
            if let Some((_, holder)) = m.streams.get_mut(&Key::of_lease(lease)) {
                if holder.as_ref().is_some_and(|(o, _)| *o == lease.owner) {
                    *holder = None;
                }
            }
        });
        Ok(())
    }

    async fn load(&self, key: Key) -> Result<StreamState, Error> {
        Ok(self
            .sync
            .with(|m| m.streams.get(&key).map(|(s, _)| *s).unwrap_or_default()))
    }

    async fn commit(&self, lease: &SyncLease, ttl: Duration, c: Commit<'_>) -> Result<bool, Error> {
        let key = Key::of_lease(lease);
        Ok(self.sync.with(|m| {
            let Some((state, holder)) = m.streams.get_mut(&key) else {
                return false;
            };
            let ours = state.fence == lease.fence
                && holder.as_ref().is_some_and(|(o, _)| *o == lease.owner);
            if !ours {
                return false;
            }
            *holder = Some((lease.owner.clone(), Instant::now() + ttl));
            if let Some(cursor) = c.cursor {
                state.cursor = Some(state.cursor.map_or(cursor, |old| old.max(cursor)));
            }
            if let Some(b) = c.backfill {
                state.backfill = Some(b);
            }
            if let Some(s) = c.swept_at {
                state.swept_at = Some(s);
            }
            let versions = m.versions.entry(key).or_default();
            for v in c.versions {
                match versions.get(&v.id) {
                    Some(old) if old.rank() >= v.rank() => {}
                    _ => {
                        versions.insert(v.id.clone(), v.clone());
                    }
                }
            }
            true
        }))
    }

    async fn versions(&self, key: Key, ids: &[String]) -> Result<Vec<Option<VersionEntry>>, Error> {
        Ok(self.sync.with(|m| {
            let map = m.versions.get(&key);
            ids.iter()
                .map(|id| map.and_then(|v| v.get(id)).cloned())
                .collect()
        }))
    }

    async fn known(&self, key: Key, from: i64, to: i64) -> Result<Vec<VersionEntry>, Error> {
        Ok(self.sync.with(|m| {
            m.versions
                .get(&key)
                .map(|v| {
                    v.values()
                        .filter(|e| !e.deleted && e.at.is_some_and(|at| from <= at && at <= to))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn inbox_push(&self, key: Key, now_ms: i64) -> Result<(), Error> {
        self.sync.with(|m| {
            m.next_seq += 1;
            let seq = m.next_seq;
            m.inbox
                .entry(key)
                .and_modify(|e| {
                    e.seq = seq;
                    e.count += 1;
                })
                .or_insert(InboxEntry {
                    user: key.user,
                    stream: key.stream,
                    seq,
                    count: 1,
                    first_ms: now_ms,
                });
        });
        Ok(())
    }

    async fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>, Error> {
        Ok(self.sync.with(|m| {
            let mut all: Vec<InboxEntry> = m.inbox.values().cloned().collect();
            all.sort_by_key(|e| (e.first_ms, e.user, e.stream));
            all.truncate(limit);
            all
        }))
    }

    async fn inbox_ack(&self, entry: &InboxEntry) -> Result<bool, Error> {
        Ok(self.sync.with(|m| {
            let key = Key {
                user: entry.user,
                stream: entry.stream,
            };
            if m.inbox.get(&key).is_some_and(|e| e.seq == entry.seq) {
                m.inbox.remove(&key);
                true
            } else {
                false
            }
        }))
    }

    async fn inbox_depth(&self) -> Result<u64, Error> {
        Ok(self.sync.with(|m| m.inbox.len() as u64))
    }

    async fn stop(&self, user: UserId, reason: &str) -> Result<(), Error> {
        self.sync.with(|m| {
            m.stopped.insert(user, reason.to_owned());
            m.inbox.retain(|k, _| k.user != user);
        });
        Ok(())
    }

    async fn stopped(&self, user: UserId) -> Result<Option<String>, Error> {
        Ok(self.sync.with(|m| m.stopped.get(&user).cloned()))
    }

    async fn resume(&self, user: UserId) -> Result<bool, Error> {
        Ok(self.sync.with(|m| m.stopped.remove(&user).is_some()))
    }

    async fn forget(&self, user: UserId) -> Result<(), Error> {
        self.sync.with(|m| {
            m.streams.retain(|k, _| k.user != user);
            m.versions.retain(|k, _| k.user != user);
            m.inbox.retain(|k, _| k.user != user);
            m.stopped.remove(&user);
        });
        Ok(())
    }

    async fn streams(&self, user: UserId) -> Result<Vec<(SyncStream, StreamState)>, Error> {
        Ok(self.sync.with(|m| {
            let mut all: Vec<(SyncStream, StreamState)> = m
                .streams
                .iter()
                .filter(|(k, _)| k.user == user)
                .map(|(k, (state, _))| (k.stream, *state))
                .collect();
            all.sort_by_key(|(s, _)| *s);
            all
        }))
    }
}
