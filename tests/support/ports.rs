//! Ports for servers the tests start as child processes (chromedriver, a
//! private PostgreSQL).
//!
//! Binding `127.0.0.1:0`, releasing the port and handing it to a child races
//! with every outgoing connection on the machine: the kernel picks their
//! source ports from the same ephemeral range (32768 and up here), so one can
//! take the port before the child binds it, or while a stopped server is
//! down; and a readiness probe that connects to a port nobody listens on yet
//! can connect to itself and hold the port. A port below that range, never
//! handed out twice by this process, avoids both.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// Ports this process has handed out.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port in 20000..32000 that nothing listens on now and that this process
/// has not handed out before.
pub fn server_port() -> u16 {
    loop {
        // Each new `RandomState` is seeded anew: a random number.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if given.get_or_insert_with(HashSet::new).contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.as_mut().unwrap().insert(port);
            return port;
        }
    }
}
