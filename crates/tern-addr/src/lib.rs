//! tern-addr (being written).
