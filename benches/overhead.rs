//! Layer overhead benchmark (filled in with the layer).
fn main() {}
