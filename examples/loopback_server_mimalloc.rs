//! The server of the loopback benchmark with mimalloc as the global allocator,
//! as an application opts into it in its own binary (the library picks no
//! allocator). Run by `cargo bench --bench loopback`, which builds it; see
//! `benches/common/loopback_server.rs` for its interface.

#[path = "../benches/common/http_app.rs"]
mod http_app;
#[path = "../benches/common/loopback_server.rs"]
mod loopback_server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    loopback_server::main()
}
