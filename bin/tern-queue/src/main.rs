//! tern-queue (being written).
fn main() {}
