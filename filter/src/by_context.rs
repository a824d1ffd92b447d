//! Values by proxy-wasm context id, found by a hashed look-up however many there are.
//!
//! The requests held for a token live here: thousands of them while a token is late under load. The
//! index is the proxy-wasm SDK's own map type, `HashMap<u32, u32>` with the default hasher (context id to
//! place in a dense list), rather than a map holding the values: the module then carries one copy of
//! that hash table's code where a map per value type would add another.

use hashbrown::HashMap;

/// Values by context id: an index of places and a dense list of the values.
#[derive(Debug)]
pub struct ByContext<T> {
    /// Place in `values` by context id.
    places: HashMap<u32, u32>,
    /// Each context id with its value, in no order: a removal moves the last one into the freed place.
    values: Vec<(u32, T)>,
}

impl<T> Default for ByContext<T> {
    fn default() -> Self {
        Self {
            places: HashMap::new(),
            values: Vec::new(),
        }
    }
}

impl<T> ByContext<T> {
    /// Keeps `value` for `context_id`, in place of any value kept for it before.
    pub fn insert(&mut self, context_id: u32, value: T) {
        // A list of 32-bit places holds fewer than `u32::MAX` values: each takes several bytes of a
        // 4 GiB memory on wasm32, and natively no caller keeps that many.
        let place = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push((context_id, value));
        // Only whether the id was present is read, as the SDK reads its own inserts into this map
        // type: both then compile to one function in the module.
        if self.places.insert(context_id, place).is_some() {
            // Kept twice (a host that repeated a callback): the earlier entry, found by a scan that
            // never runs otherwise, makes way for this one, which takes its place.
            if let Some(earlier) = self.values.iter().position(|(id, _)| *id == context_id)
                && let Ok(earlier_place) = u32::try_from(earlier)
                && earlier_place != place
            {
                self.values.swap_remove(earlier);
                self.places.insert(context_id, earlier_place);
            }
        }
    }

    /// Takes the value kept for `context_id` out, if there is one. The id is borrowed, as
    /// `HashMap::remove` takes it.
    pub fn remove(&mut self, context_id: &u32) -> Option<T> {
        let place = self.places.remove(context_id)?;
        let index = usize::try_from(place).ok()?;
        if index >= self.values.len() {
            return None;
        }
        let (_, value) = self.values.swap_remove(index);
        if let Some(&(moved, _)) = self.values.get(index) {
            self.places.insert(moved, place);
        }
        Some(value)
    }

    /// How many values are kept.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no value is kept.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_removed_value_comes_back_once() {
        let mut held = ByContext::default();
        held.insert(7, "seven");
        held.insert(9, "nine");
        assert_eq!(held.remove(&7), Some("seven"));
        assert_eq!(held.remove(&7), None);
        assert_eq!(held.remove(&8), None);
        assert_eq!(held.len(), 1);
        assert_eq!(held.remove(&9), Some("nine"));
        assert!(held.is_empty());
    }

    #[test]
    fn removing_from_the_middle_keeps_every_other_value_found() {
        let mut held = ByContext::default();
        for id in 0..3_000u32 {
            held.insert(id * 2 + 1, id);
        }
        // Every third one goes, in an order that moves the last entry into many freed places.
        for id in (0..3_000u32).step_by(3) {
            assert_eq!(held.remove(&(id * 2 + 1)), Some(id));
        }
        assert_eq!(held.len(), 2_000);
        for id in 0..3_000u32 {
            let expected = (id % 3 != 0).then_some(id);
            assert_eq!(held.remove(&(id * 2 + 1)), expected, "id {id}");
        }
        assert!(held.is_empty());
    }

    #[test]
    fn a_second_insert_replaces_the_first_value() {
        let mut held = ByContext::default();
        held.insert(1, "a");
        held.insert(2, "b");
        held.insert(3, "c");
        held.insert(1, "a again");
        held.insert(3, "c again");
        assert_eq!(held.len(), 3);
        assert_eq!(held.remove(&1), Some("a again"));
        assert_eq!(held.remove(&2), Some("b"));
        assert_eq!(held.remove(&3), Some("c again"));
        assert!(held.is_empty());
        held.insert(4, "d");
        held.insert(4, "d again");
        assert_eq!(held.remove(&4), Some("d again"));
        assert!(held.is_empty());
    }
}
