//! The tests' throwaway PostgreSQL (tests/support/postgres.rs), for benchmarks: the same
//! server, but a missing PostgreSQL is an error here, never a skip.

/// The harness asks whether to skip; a benchmark asked for PostgreSQL, so it must not.
pub fn skip_unless_ci(what: &str, missing: Option<String>) -> bool {
    if let Some(why) = missing {
        panic!("{what}: {why}");
    }
    false
}

pub mod binary {
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

#[path = "../../tests/support/postgres.rs"]
pub mod postgres;
