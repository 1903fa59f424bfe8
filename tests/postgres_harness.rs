//! The throwaway PostgreSQL of tests/support/postgres.rs: it answers on its URL, an extra
//! database is a separate one, and the server is gone once the harness is dropped. Without
//! PostgreSQL it says why and skips, except under REGISTRAR_CI=1 (.ci/run), where it fails.

mod support;

use std::process::Output;

use support::postgres::Postgres;

fn stdout(out: Output) -> String {
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_throwaway_postgres_answers_on_its_url_and_is_gone_after_drop() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.url();
    assert!(url.starts_with("postgres://registrar@127.0.0.1:"), "{url}");
    assert_eq!(
        stdout(pg.psql(&url).args(["-tA", "-c", "select 1"]).output().unwrap()),
        "1"
    );

    let second = pg.create_database("second");
    let current = pg
        .psql(&second)
        .args(["-tA", "-c", "select current_database()"])
        .output();
    assert_eq!(stdout(current.unwrap()), "second");

    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the server still listens after drop"
    );
}
