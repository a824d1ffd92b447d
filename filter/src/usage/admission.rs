//! The caps on distinct callers and models, shared by every VM.
//!
//! A hostile caller could otherwise grow the metric set without end (each new caller or model name is
//! a new set of metrics). The first `cap` distinct values seen by any VM are admitted; every later one
//! is counted under [`OTHER`]. The admitted values live in one shared-data entry per dimension (a list
//! of labels separated by `\n`; a sanitised label never holds one), written by compare-and-swap so two
//! VMs admitting at once never lose each other's value. Each VM keeps what it has read: a value is
//! looked up in shared data once per VM, and once the list is full it is never read again (the list
//! only grows, so a full list is final).

use hashbrown::HashMap;

use crate::headers::same_bytes;
use crate::token::manager::{SetError, Write};
use crate::usage::labels::{OTHER, UNKNOWN};

/// The shared-data calls the registry needs; the glue implements it with the host's shared data, the
/// tests with an in-memory store that behaves as Envoy's does.
pub trait SharedStore {
    /// A shared-data value and its cas; `None` when the key does not exist.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes a shared-data value under a condition.
    ///
    /// # Errors
    /// [`SetError::CasMismatch`] when the condition does not hold, [`SetError::Failed`] when the host
    /// refused the write.
    fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError>;
}

/// Shared-data key of the admitted callers.
pub const CALLERS_KEY: &str = "credential_filter.usage.callers";
/// Shared-data key of the admitted models.
pub const MODELS_KEY: &str = "credential_filter.usage.models";

/// How often one admission retries after losing a compare-and-swap to another VM.
const MAX_ATTEMPTS: usize = 16;

/// One VM's view of one capped dimension (callers or models).
#[derive(Debug)]
pub struct Admission {
    key: &'static str,
    cap: usize,
    /// Values known to be admitted (read from or written to shared data). A map whose values are
    /// unused rather than a set: it is the type of the usage glue's maps, so the module carries one
    /// copy of the hash table's code for all of them.
    admitted: HashMap<String, u32>,
    /// The shared list had reached the cap when last read; `admitted` then holds all of it.
    full: bool,
}

impl Admission {
    /// A registry for the values under shared-data `key`, at most `cap` of them.
    pub fn new(key: &'static str, cap: usize) -> Self {
        Self {
            key,
            cap,
            admitted: HashMap::new(),
            full: false,
        }
    }

    /// The label to count `value` (already sanitised) under: `value` itself when it is admitted or can
    /// be admitted now, else [`OTHER`]. [`UNKNOWN`] and [`OTHER`] are always themselves and take no
    /// place under the cap.
    pub fn label<'v>(&mut self, store: &mut dyn SharedStore, value: &'v str) -> &'v str {
        let is = |label: &str| same_bytes(value.as_bytes(), label.as_bytes());
        // `get` rather than `contains_key`: the glue's look-ups in maps of this type use `get`, which
        // then is the one compiled look-up for all of them.
        if is(OTHER) || is(UNKNOWN) || self.admitted.get(value).is_some() {
            return value;
        }
        if self.full {
            return OTHER;
        }
        for _ in 0..MAX_ATTEMPTS {
            let stored = store.get(self.key);
            let (list, write) = match &stored {
                Some((bytes, cas)) => (bytes.as_slice(), Write::IfCas(*cas)),
                None => (&[][..], Write::IfAbsent),
            };
            let listed = labels(list);
            let present = listed.contains(&value.as_bytes());
            let count = listed.len();
            self.remember(&listed);
            if present {
                return value;
            }
            if count >= self.cap {
                self.full = true;
                return OTHER;
            }
            let mut updated = Vec::with_capacity(list.len() + value.len() + 1);
            updated.extend_from_slice(list);
            if !updated.is_empty() && updated.last() != Some(&b'\n') {
                updated.push(b'\n');
            }
            updated.extend_from_slice(value.as_bytes());
            match store.set(self.key, &updated, write) {
                Ok(()) => {
                    self.admitted.insert(value.to_owned(), 0);
                    self.full = count + 1 >= self.cap;
                    return value;
                }
                Err(SetError::CasMismatch) => {}
                Err(SetError::Failed) => return OTHER,
            }
        }
        OTHER
    }

    /// How many values this VM knows to be admitted.
    pub fn known(&self) -> usize {
        self.admitted.len()
    }

    fn remember(&mut self, listed: &[&[u8]]) {
        for label in listed {
            if let Ok(label) = std::str::from_utf8(label)
                && self.admitted.get(label).is_none()
            {
                self.admitted.insert(label.to_owned(), 0);
            }
        }
    }
}

/// The labels of a stored list (empty entries skipped: the SDK's remove leaves an empty value).
fn labels(list: &[u8]) -> Vec<&[u8]> {
    list.split(|&byte| byte == b'\n')
        .filter(|label| !label.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// Shared data as Envoy keeps it: one global cas counter from 1; an absent key is written whatever
    /// the cas, a present one only with its current cas.
    #[derive(Default)]
    struct Store {
        data: HashMap<String, (Vec<u8>, u32)>,
        next_cas: u32,
        /// Writes to refuse with a cas mismatch after another "VM" wrote `interloper` first.
        interlopers: Vec<&'static str>,
        refuse: bool,
        writes: usize,
    }

    /// A VM's port onto the shared store.
    struct Port(Rc<RefCell<Store>>);

    impl SharedStore for Port {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.borrow().data.get(key).cloned()
        }

        fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError> {
            let mut store = self.0.borrow_mut();
            if store.refuse {
                return Err(SetError::Failed);
            }
            if let Some(interloper) = store.interlopers.pop() {
                let mut list = store
                    .data
                    .get(key)
                    .map(|(v, _)| v.clone())
                    .unwrap_or_default();
                if !list.is_empty() {
                    list.push(b'\n');
                }
                list.extend_from_slice(interloper.as_bytes());
                store.next_cas += 1;
                let cas = store.next_cas;
                store.data.insert(key.to_owned(), (list, cas));
                return Err(SetError::CasMismatch);
            }
            let current = store.data.get(key).map(|(_, cas)| *cas);
            match (current, write) {
                (Some(cas), Write::IfCas(expected)) if cas != expected => {
                    return Err(SetError::CasMismatch);
                }
                (Some(_), Write::IfAbsent) => return Err(SetError::CasMismatch),
                _ => {}
            }
            store.next_cas += 1;
            store.writes += 1;
            let cas = store.next_cas;
            store.data.insert(key.to_owned(), (value.to_vec(), cas));
            Ok(())
        }
    }

    fn stored(store: &Rc<RefCell<Store>>) -> String {
        String::from_utf8(store.borrow().data[CALLERS_KEY].0.clone()).unwrap()
    }

    #[test]
    fn the_first_values_up_to_the_cap_are_admitted_the_rest_are_other() {
        let store = Rc::new(RefCell::new(Store::default()));
        let mut port = Port(Rc::clone(&store));
        let mut callers = Admission::new(CALLERS_KEY, 2);
        assert_eq!(callers.label(&mut port, "alice"), "alice");
        assert_eq!(callers.label(&mut port, "bob"), "bob");
        assert_eq!(callers.label(&mut port, "carol"), OTHER);
        assert_eq!(callers.label(&mut port, "alice"), "alice");
        assert_eq!(callers.label(&mut port, UNKNOWN), UNKNOWN);
        assert_eq!(callers.label(&mut port, OTHER), OTHER);
        assert_eq!(stored(&store), "alice\nbob");
        assert_eq!(store.borrow().writes, 2);
    }

    #[test]
    fn vms_share_one_list_and_a_full_list_is_never_read_again() {
        let store = Rc::new(RefCell::new(Store::default()));
        let mut first = Admission::new(CALLERS_KEY, 2);
        let mut second = Admission::new(CALLERS_KEY, 2);
        assert_eq!(first.label(&mut Port(Rc::clone(&store)), "alice"), "alice");
        assert_eq!(second.label(&mut Port(Rc::clone(&store)), "bob"), "bob");
        // The first VM learns of bob's admission from shared data, and that the list is full.
        assert_eq!(first.label(&mut Port(Rc::clone(&store)), "carol"), OTHER);
        assert_eq!(first.known(), 2);
        assert_eq!(first.label(&mut Port(Rc::clone(&store)), "bob"), "bob");
        // Once full, a VM answers from what it holds: nothing is read (a poisoned store shows it).
        store.borrow_mut().data.clear();
        assert_eq!(first.label(&mut Port(Rc::clone(&store)), "dave"), OTHER);
        assert_eq!(first.label(&mut Port(Rc::clone(&store)), "alice"), "alice");
        assert_eq!(second.label(&mut Port(Rc::clone(&store)), "alice"), "alice");
    }

    #[test]
    fn a_lost_compare_and_swap_is_retried_and_keeps_the_other_vms_value() {
        let store = Rc::new(RefCell::new(Store::default()));
        store.borrow_mut().interlopers = vec!["bob", "carol"];
        let mut callers = Admission::new(CALLERS_KEY, 3);
        assert_eq!(
            callers.label(&mut Port(Rc::clone(&store)), "alice"),
            "alice"
        );
        assert_eq!(stored(&store), "carol\nbob\nalice");
        // The interlopers filled the cap together with alice.
        assert_eq!(callers.label(&mut Port(Rc::clone(&store)), "dave"), OTHER);
        assert_eq!(callers.label(&mut Port(Rc::clone(&store)), "bob"), "bob");
    }

    #[test]
    fn a_value_admitted_by_another_vm_meanwhile_is_not_listed_twice() {
        let store = Rc::new(RefCell::new(Store::default()));
        store.borrow_mut().interlopers = vec!["alice"];
        let mut callers = Admission::new(CALLERS_KEY, 5);
        assert_eq!(
            callers.label(&mut Port(Rc::clone(&store)), "alice"),
            "alice"
        );
        assert_eq!(stored(&store), "alice");
    }

    #[test]
    fn a_refused_write_or_endless_contention_counts_as_other_without_remembering() {
        let store = Rc::new(RefCell::new(Store::default()));
        store.borrow_mut().refuse = true;
        let mut callers = Admission::new(CALLERS_KEY, 5);
        assert_eq!(callers.label(&mut Port(Rc::clone(&store)), "alice"), OTHER);
        store.borrow_mut().refuse = false;
        assert_eq!(
            callers.label(&mut Port(Rc::clone(&store)), "alice"),
            "alice"
        );

        let names: Vec<&'static str> = (0..MAX_ATTEMPTS)
            .map(|n| &*Box::leak(format!("vm{n}").into_boxed_str()))
            .collect();
        store.borrow_mut().interlopers = names;
        let mut models = Admission::new(CALLERS_KEY, 100);
        assert_eq!(models.label(&mut Port(Rc::clone(&store)), "zed"), OTHER);
        assert_eq!(models.label(&mut Port(Rc::clone(&store)), "zed"), "zed");
    }

    #[test]
    fn an_emptied_entry_reads_as_an_empty_list() {
        let store = Rc::new(RefCell::new(Store::default()));
        store
            .borrow_mut()
            .data
            .insert(CALLERS_KEY.to_owned(), (Vec::new(), 7));
        store.borrow_mut().next_cas = 7;
        let mut callers = Admission::new(CALLERS_KEY, 1);
        assert_eq!(
            callers.label(&mut Port(Rc::clone(&store)), "alice"),
            "alice"
        );
        assert_eq!(stored(&store), "alice");
    }
}
