//! The overhead probe with the system allocator: see
//! `benches/common/overhead_probe.rs`.

#[path = "../benches/common/http_app.rs"]
mod http_app;
#[path = "../benches/common/overhead_probe.rs"]
mod overhead_probe;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    overhead_probe::main()
}
