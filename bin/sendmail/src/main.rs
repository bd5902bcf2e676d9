//! sendmail (being written).
fn main() {}
