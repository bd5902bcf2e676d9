//! tern-inject (being written).
fn main() {}
