//! tern-control (being written).
