//! tern-spool (being written).
