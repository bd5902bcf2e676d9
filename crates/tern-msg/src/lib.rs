//! tern-msg (being written).
