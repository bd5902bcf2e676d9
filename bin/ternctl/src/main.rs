//! ternctl (being written).
fn main() {}
