//! The server of the loopback benchmark, with the system allocator (glibc's
//! malloc on Linux). Run by `cargo bench --bench loopback`, which builds it;
//! see `benches/common/loopback_server.rs` for its interface.

#[path = "../benches/common/http_app.rs"]
mod http_app;
#[path = "../benches/common/loopback_server.rs"]
mod loopback_server;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    loopback_server::main()
}
