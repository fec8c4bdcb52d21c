//! A log whose leaves live in a database shared by several servers (the
//! replicas of one PostgreSQL store): every replica appends through the
//! [`LeafBackend`], which orders all appends into one linear log, and keeps
//! an in-memory copy of the tree that it brings up to date from the backend
//! before it answers.

use std::collections::HashMap;
use std::sync::Mutex;

use tlog_tiles::Hash;

use crate::tree::{leaf_hash, Tree};

/// Where the leaves of a shared log are kept.
pub trait LeafBackend: Send + Sync {
    /// The leaf hashes from index `from` on, in log order.
    fn read_from(&self, from: u64) -> Result<Vec<Hash>, String>;
    /// Durably appends, in order, every hash of `hashes` not yet in the
    /// log, serialized with every other writer (one linear log; no hash
    /// twice).
    fn append(&self, hashes: &[Hash]) -> Result<(), String>;
}

struct State {
    tree: Tree,
    index: HashMap<[u8; 32], u64>,
}

/// A log shared by replicas through a [`LeafBackend`].
pub struct SharedLog {
    backend: Box<dyn LeafBackend>,
    state: Mutex<State>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog").finish_non_exhaustive()
    }
}

impl SharedLog {
    /// Loads the whole log from `backend`.
    pub fn open(backend: Box<dyn LeafBackend>) -> Result<SharedLog, String> {
        let log = SharedLog {
            backend,
            state: Mutex::new(State {
                tree: Tree::default(),
                index: HashMap::new(),
            }),
        };
        log.refresh()?;
        Ok(log)
    }

    fn catch_up(&self, st: &mut State) -> Result<(), String> {
        let more = self.backend.read_from(st.tree.size())?;
        for h in more {
            let i = st.tree.push(h);
            st.index.insert(h.0, i);
        }
        Ok(())
    }

    /// Brings the in-memory tree up to what every replica appended.
    pub fn refresh(&self) -> Result<(), String> {
        let mut st = self.state.lock().expect("log lock");
        self.catch_up(&mut st)
    }

    /// Appends the statements of `items` not yet logged (by any replica);
    /// returns each one's leaf index.
    pub fn append_batch(&self, items: &[&[u8]]) -> Result<Vec<u64>, String> {
        let hashes: Vec<Hash> = items.iter().map(|d| leaf_hash(d)).collect();
        let mut st = self.state.lock().expect("log lock");
        let new: Vec<Hash> = hashes
            .iter()
            .filter(|h| !st.index.contains_key(&h.0))
            .copied()
            .collect();
        if !new.is_empty() {
            self.backend.append(&new)?;
        }
        self.catch_up(&mut st)?;
        hashes
            .iter()
            .map(|h| {
                st.index
                    .get(&h.0)
                    .copied()
                    .ok_or_else(|| "the backend did not keep an appended leaf".to_string())
            })
            .collect()
    }

    /// Runs `f` on the tree as this replica last saw it.
    pub fn with_tree<T>(&self, f: impl FnOnce(&Tree) -> T) -> T {
        f(&self.state.lock().expect("log lock").tree)
    }
}
