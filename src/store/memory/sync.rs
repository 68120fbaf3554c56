//! The sync state of a [`MemoryStore`]: maps behind one mutex (lease expiry on the monotonic
//! clock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::store::StoreFuture;
use crate::sync::{
    Commit, InboxEntry, StreamState, SyncLease, SyncState, SyncStream, VersionEntry,
};
use crate::token::UserId;

type Key = (UserId, SyncStream);

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

fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(async move { Ok(value) })
}

impl SyncState for MemoryStore {
    fn lease(
        &self,
        user: UserId,
        stream: SyncStream,
        ttl: Duration,
    ) -> StoreFuture<'_, Option<SyncLease>> {
        let now = Instant::now();
        ready(self.sync.with(|m| {
            let (state, holder) = m.streams.entry((user, stream)).or_default();
            if holder.as_ref().is_some_and(|(_, until)| *until > now) {
                return None;
            }
            state.fence += 1;
            let owner = SyncLease::new_owner();
            *holder = Some((owner.clone(), now + ttl));
            Some(SyncLease {
                user,
                stream,
                owner,
                fence: state.fence,
            })
        }))
    }

    fn release<'a>(&'a self, lease: &'a SyncLease) -> StoreFuture<'a, ()> {
        self.sync.with(|m| {
            if let Some((_, holder)) = m.streams.get_mut(&(lease.user, lease.stream)) {
                if holder.as_ref().is_some_and(|(o, _)| *o == lease.owner) {
                    *holder = None;
                }
            }
        });
        ready(())
    }

    fn load(&self, user: UserId, stream: SyncStream) -> StoreFuture<'_, StreamState> {
        ready(self.sync.with(|m| {
            m.streams
                .get(&(user, stream))
                .map(|(s, _)| *s)
                .unwrap_or_default()
        }))
    }

    fn commit<'a>(
        &'a self,
        lease: &'a SyncLease,
        ttl: Duration,
        commit: Commit<'a>,
    ) -> StoreFuture<'a, bool> {
        let key = (lease.user, lease.stream);
        ready(self.sync.with(|m| {
            let Some((state, holder)) = m.streams.get_mut(&key) else {
                return false;
            };
            let ours = state.fence == lease.fence
                && holder.as_ref().is_some_and(|(o, _)| *o == lease.owner);
            if !ours {
                return false;
            }
            *holder = Some((lease.owner.clone(), Instant::now() + ttl));
            if let Some(c) = commit.cursor {
                state.cursor = Some(state.cursor.map_or(c, |old| old.max(c)));
            }
            if let Some(b) = commit.backfill {
                state.backfill = Some(b);
            }
            if let Some(s) = commit.swept_at {
                state.swept_at = Some(s);
            }
            let versions = m.versions.entry(key).or_default();
            for v in commit.versions {
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

    fn versions<'a>(
        &'a self,
        user: UserId,
        stream: SyncStream,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<VersionEntry>>> {
        ready(self.sync.with(|m| {
            let map = m.versions.get(&(user, stream));
            ids.iter()
                .map(|id| map.and_then(|v| v.get(id)).cloned())
                .collect()
        }))
    }

    fn known(
        &self,
        user: UserId,
        stream: SyncStream,
        from: i64,
        to: i64,
    ) -> StoreFuture<'_, Vec<VersionEntry>> {
        ready(self.sync.with(|m| {
            m.versions
                .get(&(user, stream))
                .map(|v| {
                    v.values()
                        .filter(|e| !e.deleted && e.at.is_some_and(|at| from <= at && at <= to))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    fn inbox_push(&self, user: UserId, stream: SyncStream, now_ms: i64) -> StoreFuture<'_, ()> {
        self.sync.with(|m| {
            m.next_seq += 1;
            let seq = m.next_seq;
            m.inbox
                .entry((user, stream))
                .and_modify(|e| {
                    e.seq = seq;
                    e.count += 1;
                })
                .or_insert(InboxEntry {
                    user,
                    stream,
                    seq,
                    count: 1,
                    first_ms: now_ms,
                });
        });
        ready(())
    }

    fn inbox(&self, limit: usize) -> StoreFuture<'_, Vec<InboxEntry>> {
        ready(self.sync.with(|m| {
            let mut all: Vec<InboxEntry> = m.inbox.values().cloned().collect();
            all.sort_by_key(|e| (e.first_ms, e.user, e.stream));
            all.truncate(limit);
            all
        }))
    }

    fn inbox_ack<'a>(&'a self, entry: &'a InboxEntry) -> StoreFuture<'a, bool> {
        ready(self.sync.with(|m| {
            let key = (entry.user, entry.stream);
            if m.inbox.get(&key).is_some_and(|e| e.seq == entry.seq) {
                m.inbox.remove(&key);
                true
            } else {
                false
            }
        }))
    }

    fn inbox_depth(&self) -> StoreFuture<'_, u64> {
        ready(self.sync.with(|m| m.inbox.len() as u64))
    }

    fn stop<'a>(&'a self, user: UserId, reason: &'a str) -> StoreFuture<'a, ()> {
        self.sync.with(|m| {
            m.stopped.insert(user, reason.to_owned());
            m.inbox.retain(|(u, _), _| *u != user);
        });
        ready(())
    }

    fn stopped(&self, user: UserId) -> StoreFuture<'_, Option<String>> {
        ready(self.sync.with(|m| m.stopped.get(&user).cloned()))
    }

    fn resume(&self, user: UserId) -> StoreFuture<'_, bool> {
        ready(self.sync.with(|m| m.stopped.remove(&user).is_some()))
    }

    fn forget(&self, user: UserId) -> StoreFuture<'_, ()> {
        self.sync.with(|m| {
            m.streams.retain(|(u, _), _| *u != user);
            m.versions.retain(|(u, _), _| *u != user);
            m.inbox.retain(|(u, _), _| *u != user);
            m.stopped.remove(&user);
        });
        ready(())
    }

    fn streams(&self, user: UserId) -> StoreFuture<'_, Vec<(SyncStream, StreamState)>> {
        ready(self.sync.with(|m| {
            let mut all: Vec<(SyncStream, StreamState)> = m
                .streams
                .iter()
                .filter(|((u, _), _)| *u == user)
                .map(|((_, s), (state, _))| (*s, *state))
                .collect();
            all.sort_by_key(|(s, _)| *s);
            all
        }))
    }
}
