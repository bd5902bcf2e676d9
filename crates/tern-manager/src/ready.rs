//! Recipients waiting for their time.

use std::collections::{BTreeSet, HashMap};

/// so a recipient is in the set at most once.
#[derive(Default)]
pub(crate) struct Ready {
    pub(crate) set: BTreeSet<(i64, u64, u32)>,
    pub(crate) due: HashMap<(u64, u32), i64>,
}

impl Ready {
    pub(crate) fn insert(&mut self, due: i64, id: u64, index: u32) {
        if let Some(old) = self.due.insert((id, index), due) {
            self.set.remove(&(old, id, index));
        }
        self.set.insert((due, id, index));
    }
    pub(crate) fn remove(&mut self, id: u64, index: u32) {
        if let Some(old) = self.due.remove(&(id, index)) {
            self.set.remove(&(old, id, index));
        }
    }
    pub(crate) fn first(&self) -> Option<&(i64, u64, u32)> {
        self.set.first()
    }
    pub(crate) fn pop_first(&mut self) -> Option<(i64, u64, u32)> {
        let e = self.set.pop_first()?;
        self.due.remove(&(e.1, e.2));
        Some(e)
    }
    pub(crate) fn take_all(&mut self) -> Vec<(i64, u64, u32)> {
        self.due.clear();
        std::mem::take(&mut self.set).into_iter().collect()
    }
}
