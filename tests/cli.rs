//! The command line as an operator meets it: `--config.check` exit codes and
//! messages, and a clear error (not a panic) for a bad config at start-up.

use std::process::Command;

fn exporter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"))
}

#[test]
fn config_check_accepts_the_shipped_example() {
    let out = exporter()
        .args(["--config.file", "exporter.yaml", "--config.check"])
        .env("ROOMENGINE_SECRET_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exporter.yaml: config OK: sdkappid 1400000000, endpoint https://adminapisgp.im.qcloud.com, 1 rooms, interval 30s, rate_limit 100/s\n"
    );
}

#[test]
fn config_check_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "app:\n  sdkappid: 1400000000\n  identifier: admin\n  region: mars\npolling:\n  rate_limit: 250\nrooms: []\n",
    )
    .unwrap();
    let out = exporter()
        .arg("--config.file")
        .arg(&path)
        .arg("--config.check")
        .env_remove("ROOMENGINE_SECRET_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let p = path.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{p}: app.secret_key_env: environment variable ROOMENGINE_SECRET_KEY is not set (it must hold the SecretKey)\n\
             {p}: app.region: unknown region \"mars\" (known: china, singapore, seoul, frankfurt, mumbai, silicon-valley, jakarta)\n\
             {p}: polling.rate_limit: 250 exceeds the API limit of 200 calls/s\n\
             {p}: rooms: the list is empty (name at least one room ID, or turn on callbacks.listen_address to discover rooms)\n"
        )
    );
}

#[test]
fn bad_config_at_startup_exits_1_with_the_reason() {
    let out = exporter()
        .args([
            "--config.file",
            "/nonexistent/exporter.yaml",
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/exporter.yaml: cannot read config file: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn config_check_names_the_ha_replica_and_refuses_a_bad_replica_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.yaml");
    std::fs::write(
        &path,
        "app:\n  sdkappid: 1400000000\n  identifier: admin\n  region: singapore\nrooms: []\n\
         callbacks:\n  listen_address: 127.0.0.1:39182\n  redis_url: redis://10.0.0.7\nha:\n  replica_id: from-file\n  dead_after: 12s\n",
    )
    .unwrap();
    let check = |extra: &[&str]| {
        exporter()
            .arg("--config.file")
            .arg(&path)
            .arg("--config.check")
            .args(extra)
            .env("ROOMENGINE_SECRET_KEY", "k")
            .output()
            .unwrap()
    };
    let out = check(&["--ha.replica-id", "exporter-7"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(
            "(state: Redis redis://10.0.0.7:6379/0; HA replica exporter-7, heartbeat 2s, dead after 12s)\n"
        ),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = check(&["--ha.replica-id", "exporter 7"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "--ha.replica-id: \"exporter 7\" holds ' ': use letters, digits, '.', '_' and '-' only\n"
    );
}
