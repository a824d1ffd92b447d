//! Probe filter: calls host functions when asked, so every host call can be tested without business logic.
