//! `roomengine-exporter callbacks show|set` run as an operator runs it, against
//! the in-process simulator: exact output, exit codes, what get_callback then
//! holds, and that the SecretKey never shows.

use std::process::{Command, Output};

use roomengine_exporter::config::SecretKey;
use roomengine_exporter::sim::{SimHandle, SimOptions, Simulator};

const KEY: &str = "cli-secret-key-0123456789abcdef";

struct Rig {
    sim: SimHandle,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

async fn rig() -> Rig {
    let sim = Simulator::start(SimOptions {
        tick: None,
        rooms: 2,
        ..SimOptions::new(SecretKey::new(KEY.into()))
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("exporter.yaml");
    let text = format!(
        "app:\n  sdkappid: 1400000000\n  identifier: administrator\n  endpoint: {}\n  secret_key_env: CLI_TEST_KEY\nrooms:\n  - room-0001\n",
        sim.base_url()
    );
    std::fs::write(&config, text).expect("config written");
    Rig {
        sim,
        _dir: dir,
        config,
    }
}

impl Rig {
    /// Runs the binary with `args` after `--config.file`; checks the key never shows.
    async fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"));
        command
            .arg("--config.file")
            .arg(&self.config)
            .args(args)
            .env("CLI_TEST_KEY", KEY);
        let out: Output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("joined")
            .expect("binary runs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(!stdout.contains(KEY) && !stderr.contains(KEY), "{stdout}{stderr}");
        assert!(
            !stdout.contains("usersig") && !stderr.contains("usersig"),
            "{stdout}{stderr}"
        );
        (out.status.code(), stdout, stderr)
    }
}

const ALL_MISSING: &str = "missing for the exporter: Room.CallbackAfterCreateRoom, Room.CallbackAfterDestroyRoom, \
Room.CallbackUpdateRoomInfo, Room.CallbackAfterMemberEnter, Room.CallbackAfterMemberLeave, Mic.CallbackAfterSeatInfoChanged\n";

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_nothing_set_then_the_missing_commands() {
    let rig = rig().await;
    let (code, stdout, _) = rig.run(&["callbacks", "show"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout,
        format!("callback URL: (none)\nregistered commands: (none)\n{ALL_MISSING}")
    );

    let commands = vec![
        "Room.CallbackAfterUpdateRoomInfo".into(),
        "Room.CallbackAfterCreateRoom".into(),
    ];
    rig.sim
        .set_callback_url(Some("http://127.0.0.1:9/app".into()), commands)
        .expect("registered");
    let (code, stdout, _) = rig.run(&["callbacks", "show"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout,
        "callback URL: http://127.0.0.1:9/app\n\
         registered commands: Room.CallbackAfterUpdateRoomInfo, Room.CallbackAfterCreateRoom\n\
         missing for the exporter: Room.CallbackAfterDestroyRoom, Room.CallbackAfterMemberEnter, \
         Room.CallbackAfterMemberLeave, Mic.CallbackAfterSeatInfoChanged\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn set_without_yes_changes_nothing_and_with_yes_registers_every_command() {
    let rig = rig().await;
    rig.sim
        .set_callback_url(
            Some("http://127.0.0.1:9/app".into()),
            vec!["Room.CallbackAfterCreateRoom".into()],
        )
        .expect("registered");
    let before = "callback URL: http://127.0.0.1:9/app\nregistered commands: Room.CallbackAfterCreateRoom\n\
missing for the exporter: Room.CallbackAfterDestroyRoom, Room.CallbackUpdateRoomInfo, \
Room.CallbackAfterMemberEnter, Room.CallbackAfterMemberLeave, Mic.CallbackAfterSeatInfoChanged\n";
    let warning = "An app has only ONE callback URL: setting http://127.0.0.1:8/tee replaces the one registered, \
which is usually the app backend's. To keep that backend, register a tee (e.g. nginx mirror) that forwards each callback to both.\n";

    let (code, stdout, stderr) = rig
        .run(&["callbacks", "set", "--url", "http://127.0.0.1:8/tee"])
        .await;
    assert_eq!(code, Some(2));
    assert_eq!(stdout, format!("now registered:\n{before}{warning}"));
    assert_eq!(
        stderr,
        "nothing was changed: add --yes to register http://127.0.0.1:8/tee\n"
    );
    assert_eq!(rig.run(&["callbacks", "show"]).await.1, before);

    let (code, stdout, stderr) = rig
        .run(&["callbacks", "set", "--url", "http://127.0.0.1:8/tee", "--yes"])
        .await;
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let after = "callback URL: http://127.0.0.1:8/tee\nregistered commands: Room.CallbackAfterCreateRoom, \
Room.CallbackAfterDestroyRoom, Room.CallbackUpdateRoomInfo, Room.CallbackAfterMemberEnter, \
Room.CallbackAfterMemberLeave, Mic.CallbackAfterSeatInfoChanged\nmissing for the exporter: (none)\n";
    assert_eq!(
        stdout,
        format!("now registered:\n{before}{warning}registered:\n{after}")
    );
    assert_eq!(rig.run(&["callbacks", "show"]).await.1, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_url_is_an_api_error_with_exit_1() {
    let rig = rig().await;
    let (code, _, stderr) = rig
        .run(&["callbacks", "set", "--url", "ftp://x/cb", "--yes"])
        .await;
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "roomengine-exporter: set_callback failed, nothing was changed: \
         ErrorCode 100002: invalid parameter: Url \"ftp://x/cb\" is not an http:// or https:// URL\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_reported_without_showing_any_key() {
    let rig = rig().await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomengine-exporter"));
    command
        .arg("--config.file")
        .arg(&rig.config)
        .args(["callbacks", "show"])
        .env("CLI_TEST_KEY", "another-key-entirely");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joined")
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("roomengine-exporter: get_callback failed: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("another-key-entirely") && !stderr.contains(KEY),
        "{stderr}"
    );
}
