//! The overhead probe with mimalloc as the global allocator (as an
//! application opts into it in its own binary): see
//! `benches/common/overhead_probe.rs`.

#[path = "../benches/common/http_app.rs"]
mod http_app;
#[path = "../benches/common/overhead_probe.rs"]
mod overhead_probe;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    overhead_probe::main()
}
